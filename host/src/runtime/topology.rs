//! The run's shape, computed once from the pipeline and its plan so that every phase of `run`
//! (recovery, the coordinator, the sinks, the exchange, the tasks) agrees on it: stages × tasks,
//! how tasks are numbered as senders, how much a channel holds, which checkpoint mode wires
//! the channels, and which participants a checkpoint waits for.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checkpoint::coordinator::task_dir_name;
use crate::checkpoint::recovery::live_dir;
use crate::checkpoint::Participant;
use crate::config::spec::{CheckpointMode, PipelineSpec};

use super::Plan;

/// Stages × tasks and how they are connected.
pub struct Topology {
    /// Tasks per stage (P): the source stage has P source tasks, every later stage P tasks.
    pub parallelism: usize,
    /// How many stages: the source stage, then one after each `key_by`.
    pub stages: usize,
    /// Key groups: the unit of keyed state and of the shuffle.
    pub max_parallelism: u32,
    /// Batches a channel holds per sending task (`tuning.channel_capacity`, at least 1).
    pub capacity: usize,
    pub checkpointing: bool,
    /// Unaligned checkpoints: receivers get priority lanes for barriers and give credits.
    pub unaligned: bool,
    /// Unaligned: how long a receiver waits for aligned barriers before capturing.
    pub aligned_timeout: Duration,
    /// The stages whose tasks keep RocksDB state.
    pub stateful_stages: Vec<usize>,
    /// The stateful operators' ids (checkpoints refuse to restore into other ones).
    pub operators: Vec<String>,
    /// Sources keep each record's bytes for the first udf step ([`Plan::sources_keep_text`]).
    pub sources_keep_text: bool,
    /// The steps dead letters sent back by `headwater dlq replay` may enter at.
    pub replay_entries: Vec<crate::connectors::replay::ReplayEntry>,
}

impl Topology {
    pub fn new(spec: &PipelineSpec, plan: &Plan) -> Self {
        let stage_count = plan.stages.len();
        let checkpointing = spec.checkpoint.enabled;
        Topology {
            parallelism: spec.parallelism.max(1),
            stages: stage_count,
            max_parallelism: spec.max_parallelism,
            capacity: spec.tuning.channel_capacity.max(1),
            checkpointing,
            unaligned: checkpointing && spec.checkpoint.mode == CheckpointMode::Unaligned,
            aligned_timeout: spec.checkpoint.aligned_timeout,
            stateful_stages: (0..stage_count)
                .filter(|&s| plan.stages[s].has_state())
                .collect(),
            operators: (0..stage_count)
                .flat_map(|s| plan.stages[s].stateful_operators(s))
                .collect(),
            sources_keep_text: plan.sources_keep_text(),
            replay_entries: plan.replay_entries(),
        }
    }

    /// Every task of every stage: each may send to the sinks and the DLQ, which track each
    /// sender's barriers and end.
    pub fn senders(&self) -> usize {
        self.parallelism * self.stages
    }

    /// Task `task` of stage `stage`'s number among all senders.
    pub fn sender(&self, stage: usize, task: usize) -> usize {
        stage * self.parallelism + task
    }

    /// How many messages a channel into one receiver holds: `capacity` batches per task that
    /// sends to it, so one slow sender cannot starve the others' room.
    pub fn channel_bound(&self) -> usize {
        self.capacity * self.parallelism
    }

    /// Who a checkpoint waits for: every source task, every task of the later stages, then
    /// every sink instance (numbered across sinks) and the DLQ as one more sink, last.
    pub fn participants(&self, sink_instances: usize) -> Vec<Participant> {
        let mut participants: Vec<Participant> = (0..self.parallelism)
            .map(|task| Participant::Source { task })
            .collect();
        for stage in 1..self.stages {
            participants
                .extend((0..self.parallelism).map(|task| Participant::Stage { stage, task }));
        }
        // The DLQ takes part as one more sink, after the declared ones.
        participants.extend((0..=sink_instances).map(|sink| Participant::Sink { sink }));
        participants
    }

    /// Each stateful task's label and live RocksDB folder (their files are uploaded ahead of
    /// checkpoints).
    pub fn live_dirs(&self, state_dir: &Path) -> Vec<(String, PathBuf)> {
        self.stateful_stages
            .iter()
            .flat_map(|&stage| {
                (0..self.parallelism)
                    .map(move |task| (task_dir_name(stage, task), live_dir(state_dir, stage, task)))
            })
            .collect()
    }
}
