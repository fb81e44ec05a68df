//! Opening the sinks: on their own thread while the sources open (Kafka sinks take a few
//! round trips to the brokers, and finish interrupted commits first), and what commits each
//! sink instance's output at a checkpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::checkpoint::participant::CommitParticipant;
use crate::checkpoint::recovery::StartPoint;
use crate::checkpoint::CheckpointId;
use crate::config::spec::{PipelineSpec, SinkKind, SinkSpec};
use crate::connectors::{open_checkpointed_sink, open_sink};
use crate::sinks::{CheckpointedSinks, Sink};

use super::topology::Topology;
use super::RunError;

/// What recovery prepares before the sinks open: the file sinks' parts and the dead-letter
/// file. (Transactional sinks recover as they open.)
pub fn recovery_participants(spec: &PipelineSpec) -> Vec<Arc<dyn CommitParticipant>> {
    let mut out: Vec<Arc<dyn CommitParticipant>> = spec
        .sinks
        .iter()
        .filter_map(|s| match &s.kind {
            SinkKind::File { path } => Some(Arc::new(
                crate::connectors::files::parts::FilePartsCommitter::new(&s.name, path),
            ) as Arc<dyn CommitParticipant>),
            _ => None,
        })
        .collect();
    out.push(Arc::new(crate::dlq::DlqFileCommitter::new(&spec.dlq.path)));
    out
}

/// The opened sinks.
pub(super) struct OpenedSinks {
    /// Per sink (in the pipeline's order), its instances.
    pub instances: Vec<Vec<Box<dyn Sink>>>,
    /// What commits each instance's epochs, by (sink, instance); the DLQ file too.
    pub committers: HashMap<(String, usize), Arc<dyn CommitParticipant>>,
}

impl OpenedSinks {
    /// Sink instances across all sinks: each is one checkpoint participant.
    pub fn instance_count(&self) -> usize {
        self.instances.iter().map(Vec::len).sum()
    }
}

/// The sinks, opening on their own thread.
pub(super) struct SinksOpening(JoinHandle<Result<Opened, RunError>>);

/// The sinks' instances, per sink, and what commits each instance's epochs, by (sink,
/// instance).
type Opened = (
    Vec<Vec<Box<dyn Sink>>>,
    HashMap<(String, usize), Arc<dyn CommitParticipant>>,
);

impl SinksOpening {
    /// Starts opening the sinks. Sink output of epoch n is committed by checkpoint n; the
    /// run's first epoch is `first_epoch`.
    pub fn start(
        spec: &PipelineSpec,
        topology: &Topology,
        start: Option<&StartPoint>,
        first_epoch: CheckpointId,
    ) -> Result<Self, RunError> {
        let parallelism = topology.parallelism;
        let next_epoch = first_epoch;
        let sinks = spec.sinks.clone();
        let pipeline = spec.name.clone();
        let state_dir = spec.state.dir.clone();
        let interval = spec.checkpoint.interval;
        let tolerable_failures = spec.checkpoint.tolerable_failures;
        let checkpointed = start.map(|s| {
            (
                s.restored.as_ref().map(|r| r.manifest.commits.clone()),
                s.restored.as_ref().map(|r| r.manifest.parallelism),
            )
        });
        std::thread::Builder::new()
            .name("open-sinks".into())
            .spawn(move || {
                let ctx = checkpointed
                    .as_ref()
                    .map(|(restored, restored_parallelism)| CheckpointedSinks {
                        pipeline: &pipeline,
                        state_dir: &state_dir,
                        first_epoch: next_epoch,
                        restored: restored.as_deref(),
                        restored_parallelism: *restored_parallelism,
                        interval,
                        tolerable_failures,
                    });
                open_sinks(&sinks, &pipeline, parallelism, ctx.as_ref())
            })
            .map(SinksOpening)
            .map_err(|_| RunError::Panic {
                what: "opening the sinks (could not start thread)".into(),
            })
    }

    /// Waits for the sinks to open, and adds the dead-letter file's committer (the DLQ takes
    /// part in checkpoints as one more sink).
    pub fn join(self, spec: &PipelineSpec) -> Result<OpenedSinks, RunError> {
        let (instances, mut committers) = self.0.join().unwrap_or_else(|_| {
            Err(RunError::Panic {
                what: "opening the sinks".into(),
            })
        })?;
        committers.insert(
            (crate::dlq::DLQ_PARTICIPANT.to_string(), 0),
            Arc::new(crate::dlq::DlqFileCommitter::new(&spec.dlq.path)),
        );
        Ok(OpenedSinks {
            instances,
            committers,
        })
    }
}

/// Opens every sink: Kafka sinks one instance per task, the others one; for a checkpointed
/// run (`ctx`) in two-phase mode.
fn open_sinks(
    sinks: &[SinkSpec],
    pipeline: &str,
    parallelism: usize,
    ctx: Option<&CheckpointedSinks<'_>>,
) -> Result<Opened, RunError> {
    let mut opened_sinks: Vec<Vec<Box<dyn Sink>>> = Vec::with_capacity(sinks.len());
    let mut committers = HashMap::new();
    for sink_spec in sinks {
        let instances = crate::connectors::instances(sink_spec, parallelism);
        let opened = match ctx {
            Some(ctx) => open_checkpointed_sink(sink_spec, instances, ctx)?,
            None => open_sink(sink_spec, pipeline, instances)?
                .into_iter()
                .map(|s| (s, None))
                .collect(),
        };
        let mut instances = Vec::with_capacity(opened.len());
        for (instance, (sink, committer)) in opened.into_iter().enumerate() {
            if let Some(c) = committer {
                committers.insert((sink_spec.name.clone(), instance), c);
            }
            instances.push(sink);
        }
        opened_sinks.push(instances);
    }
    Ok((opened_sinks, committers))
}
