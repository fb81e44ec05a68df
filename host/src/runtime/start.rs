//! Where a run starts: from scratch, or from a checkpoint (state rebuilt, sinks' commits
//! finished, source positions); and which source task reads which partition, from where.

use std::sync::Arc;

use crate::checkpoint::participant::PositionPublisher;
use crate::checkpoint::recovery::{self, Layout, Restored, StartPoint};
use crate::config::spec::PipelineSpec;
use crate::connectors::open_source;
use crate::dlq::Names;
use crate::state::StateError;

use super::tasks::AssignedPartition;
use super::topology::Topology;
use super::{partition_key, recovery_participants, RunError, RunOptions};

/// Prepares the start point of a checkpointed run (`None` without checkpoints, after clearing
/// the state folder: such a run always starts from scratch), and says what it resumes from.
pub(super) fn start_point(
    spec: &PipelineSpec,
    topology: &Topology,
    opts: &RunOptions,
) -> Result<Option<StartPoint>, RunError> {
    let parallelism = topology.parallelism;
    // Where the run starts: from scratch, or from a checkpoint (state, positions, sinks).
    let start = if topology.checkpointing {
        let layout = Layout {
            pipeline: &spec.name,
            state_dir: &spec.state.dir,
            parallelism,
            max_parallelism: spec.max_parallelism,
            stateful_stages: topology.stateful_stages.clone(),
            operators: topology.operators.clone(),
            participants: recovery_participants(spec),
        };
        Some(recovery::prepare(
            &spec.checkpoint.location,
            &opts.start,
            &layout,
        )?)
    } else {
        if let Err(source) = std::fs::remove_dir_all(&spec.state.dir) {
            if source.kind() != std::io::ErrorKind::NotFound {
                return Err(StateError::Clear {
                    path: spec.state.dir.clone(),
                    source,
                }
                .into());
            }
        }
        None
    };
    let restored = start.as_ref().and_then(|s| s.restored.as_ref());
    if let Some(r) = restored {
        let m = &r.manifest;
        let mut line = format!(
            "resuming from checkpoint {} ({}, {} state files: {} reused locally, {} downloaded)",
            m.id,
            r.location,
            m.file_count(),
            r.stats.reused_files,
            r.stats.downloaded_files
        );
        if let Some(p) = r.rescaled_from {
            line.push_str(&format!("; parallelism {p} -> {parallelism}"));
        }
        tracing::info!("{line}");
        if opts.progress {
            eprintln!("{line}");
            if m.finished {
                eprintln!(
                    "that run had read all of its input: only input added since is read \
                     (start over with `headwater run --fresh`)"
                );
            }
        }
    }
    Ok(start)
}

/// The opened sources, their partitions spread over the source tasks.
pub(super) struct Sources {
    /// Per source task, the partitions it reads (seeked to the restored positions).
    pub per_task: Vec<Vec<AssignedPartition>>,
    /// The sources' and partitions' names, for dead-letter envelopes.
    pub names: Names,
    /// Sources that publish their checkpointed positions elsewhere (Kafka consumer groups).
    pub publishers: Vec<(String, Arc<dyn PositionPublisher>)>,
}

/// Source tasks without a partition send no records and no watermark but +inf: the first
/// later stage leaves them out of its watermark from the start, so its output does not
/// depend on when their end arrives. (The replay partition does not count: it never holds
/// a watermark.)
pub(super) fn silent_tasks(per_task: &[Vec<AssignedPartition>]) -> Vec<usize> {
    (0..per_task.len())
        .filter(|&t| per_task[t].iter().all(|a| a.partition.is_auxiliary()))
        .collect()
}

/// The partition that reads the dead letters `headwater dlq replay` sends back (in the
/// first source task), at the position the restored checkpoint left it.
fn replay_partition(
    spec: &PipelineSpec,
    topology: &Topology,
    restored: Option<&Restored>,
    resumed: &mut std::collections::HashSet<(String, String)>,
) -> Result<AssignedPartition, RunError> {
    use crate::connectors::replay::{ReplayPartition, NAME};
    use crate::sources::SourcePartition;
    let storage = crate::checkpoint::storage::CheckpointStorage::open(&spec.checkpoint.location)
        .map_err(|e| crate::sources::SourceError::Replay {
            storage: spec.checkpoint.location.clone(),
            message: e.to_string(),
        })?;
    let sources = spec.sources.iter().map(|s| s.name.clone()).collect();
    let mut partition = ReplayPartition::new(storage, sources, topology.replay_entries.clone());
    let key = (NAME.to_string(), NAME.to_string());
    if let Some(state) = restored.and_then(|r| r.positions.get(&key)) {
        partition.seek(state.position)?;
        resumed.insert(key);
    }
    Ok(AssignedPartition {
        source_name: NAME.into(),
        checkpoint_key: NAME.into(),
        partition: Box::new(partition),
        event_time: crate::config::spec::EventTimeSpec {
            field: None,
            max_out_of_orderness: std::time::Duration::ZERO,
            idle_timeout: None,
        },
        restored_max_time: None,
    })
}

/// Opens every source and spreads its partitions round-robin over the source tasks, each
/// partition seeked to where the restored checkpoint left it; warns about partitions the
/// checkpoint was reading that are gone.
pub(super) fn assign_partitions(
    spec: &PipelineSpec,
    topology: &Topology,
    restored: Option<&Restored>,
    opts: &RunOptions,
) -> Result<Sources, RunError> {
    let parallelism = topology.parallelism;
    let checkpointing = topology.checkpointing;
    // Sources, partitions spread round-robin over the source tasks.
    let mut resumed = std::collections::HashSet::new();
    let mut names = Names::default();
    let mut per_task: Vec<Vec<AssignedPartition>> = (0..parallelism).map(|_| Vec::new()).collect();
    let mut next_task = 0usize;
    let mut publishers = Vec::new();
    for (i, source) in spec.sources.iter().enumerate() {
        let partitions = open_source(source, i as u16, &spec.name)?;
        if let Some(p) = partitions.first().and_then(|p| p.position_publisher()) {
            publishers.push((source.name.clone(), p));
        }
        names.sources.push(source.name.clone());
        names
            .partitions
            .push(partitions.iter().map(|p| p.name().to_string()).collect());
        for mut partition in partitions {
            if topology.sources_keep_text {
                partition.keep_source_text();
            }
            if checkpointing && !partition.replayable() {
                tracing::warn!(
                    source = %source.name,
                    "`{}` cannot be read again: after a crash, records read since the last checkpoint are lost",
                    partition.name()
                );
            }
            let checkpoint_key = partition_key(&spec.base_dir, partition.name());
            let mut restored_max_time = None;
            if let Some(r) = restored {
                let key = (source.name.clone(), checkpoint_key.clone());
                if let Some(state) = r.positions.get(&key) {
                    partition.seek(state.position)?;
                    restored_max_time = state.max_event_time;
                    resumed.insert(key);
                } else {
                    tracing::info!(
                        source = %source.name,
                        partition = %checkpoint_key,
                        "a partition the checkpoint does not know: read from its start"
                    );
                }
            }
            per_task[next_task % parallelism].push(AssignedPartition {
                source_name: source.name.clone(),
                checkpoint_key,
                partition,
                event_time: source.event_time.clone(),
                restored_max_time,
            });
            next_task += 1;
        }
    }

    if checkpointing && !topology.replay_entries.is_empty() {
        let replays = replay_partition(spec, topology, restored, &mut resumed)?;
        per_task[0].push(replays);
    }

    if let Some(r) = restored {
        for p in &r.manifest.sources {
            if !resumed.contains(&(p.source.clone(), p.partition.clone())) && !p.ended {
                let line = format!(
                    "source `{}`: `{}` was being read at the checkpoint (line {}) but is not among the source's partitions now; its unread records will not be read",
                    p.source, p.partition, p.position.records
                );
                tracing::warn!("{line}");
                if opts.progress {
                    eprintln!("warning: {line}");
                }
            }
        }
    }
    Ok(Sources {
        per_task,
        names,
        publishers,
    })
}
