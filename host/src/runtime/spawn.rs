//! Starting the run's threads, in the order `run` calls them: the sink instances, the DLQ
//! writer, then the source tasks and the tasks of every later stage, each handed its channels.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::bounded;

use crate::checkpoint::coordinator::Barriers;
use crate::checkpoint::recovery::{key_group_range, live_dir, Restored};
use crate::dlq::{DlqWriter, Names};
use crate::sinks::Sink;
use crate::state::StateStore;

use super::dlq_task::{run_dlq, DlqOut};
use super::exchange::LocalExchange;
use super::outputs::{self, DlqMsg, Downstream, SinkHub, SinkLane, SinkMsg};
use super::sink_task::{run_sink, SinkCheckpointing};
use super::tasks::{self, AssignedPartition, StageSlot, TaskEnv};
use super::{unaligned, RunContext, RunError};

/// Threads that end with the run's result, each with its name (for errors).
pub(super) type Threads = Vec<(String, JoinHandle<Result<(), RunError>>)>;

/// Starts a thread per sink instance, each draining its own bounded channel; returns the
/// threads and, per sink, its instances' inputs. Results in flight to the sinks at the
/// restored (unaligned) checkpoint go to the instances that now own them.
pub(super) fn spawn_sinks(
    ctx: &RunContext<'_>,
    opened_sinks: Vec<Vec<Box<dyn Sink>>>,
    barriers: Option<&Barriers>,
    restored: Option<&Restored>,
) -> Result<(Threads, Vec<Vec<SinkLane>>), RunError> {
    let spec = ctx.spec;
    let control = ctx.control;
    let unaligned = ctx.topology.unaligned;
    let capacity = ctx.topology.capacity;
    let senders = ctx.topology.senders();
    let next_epoch = ctx.first_epoch;
    let restored_sink_channel = restored.map(|r| &r.sink_channel);
    let mut sink_threads = Vec::new();
    let mut sink_senders: Vec<Vec<outputs::SinkLane>> = Vec::with_capacity(spec.sinks.len());
    let mut participant = 0;
    for (sink_spec, instances) in spec.sinks.iter().zip(opened_sinks) {
        let count = instances.len();
        let mut senders_of_sink = Vec::with_capacity(count);
        for (instance, sink) in instances.into_iter().enumerate() {
            let (tx, rx) = bounded::<SinkMsg>(ctx.topology.channel_bound());
            let name = if count > 1 {
                format!("{}-{instance}", sink_spec.name)
            } else {
                sink_spec.name.clone()
            };
            // Unaligned: barriers take a priority lane, and senders wait for credit.
            let (lane, priority) = if unaligned {
                let (ptx, prx) = crossbeam_channel::unbounded();
                let credits = outputs::CreditCounters::new(senders);
                (
                    Some(Arc::new(outputs::SinkUnaligned::new(
                        ptx,
                        credits.clone(),
                        capacity as u64,
                    ))),
                    Some(unaligned::UnalignedInput {
                        priority: prx,
                        credits,
                        aligned_timeout: spec.checkpoint.aligned_timeout,
                    }),
                )
            } else {
                (None, None)
            };
            // Results in flight to the checkpointed run's instances that map to this one.
            let restored: Vec<crate::value::Value> = restored_sink_channel
                .and_then(|c| c.get(&sink_spec.name))
                .map(|per_instance| {
                    let mut mine: Vec<_> = per_instance
                        .iter()
                        .filter(|(i, _)| i % count == instance)
                        .collect();
                    mine.sort_by_key(|(i, _)| *i);
                    mine.into_iter()
                        .flat_map(|(_, v)| v.iter().cloned())
                        .collect()
                })
                .unwrap_or_default();
            let ctl = control.clone();
            let limit = sink.message_limit();
            let ckpt = barriers.cloned().map(|b| SinkCheckpointing {
                barriers: b,
                sink: participant,
                name: sink_spec.name.clone(),
                instance,
                senders,
                epoch: next_epoch,
                priority,
            });
            participant += 1;
            sink_threads.push((
                name.clone(),
                spawn(&format!("sink-{name}"), move || {
                    run_sink(sink, rx, ctl, ckpt, restored)
                })?,
            ));
            senders_of_sink.push(outputs::SinkLane {
                data: tx,
                unaligned: lane,
                limit,
            });
        }
        sink_senders.push(senders_of_sink);
    }
    if let Some(channel) = restored_sink_channel {
        for name in channel.keys() {
            if !spec.sinks.iter().any(|s| &s.name == name) {
                tracing::warn!(
                    sink = %name,
                    "the checkpoint has results in flight to a sink this pipeline no longer has; dropped"
                );
            }
        }
    }
    Ok((sink_threads, sink_senders))
}

/// Starts the dead-letter writer's thread (epochs committed with the checkpoints when they
/// are on) and returns it with the hub every task sends its results, side outputs and dead
/// letters through.
pub(super) fn spawn_dlq(
    ctx: &RunContext<'_>,
    barriers: Option<&Barriers>,
    names: Names,
    sink_senders: Vec<Vec<SinkLane>>,
    sink_instances: usize,
    dlq_len: u64,
) -> Result<(JoinHandle<Result<(), RunError>>, SinkHub), RunError> {
    let spec = ctx.spec;
    let senders = ctx.topology.senders();
    let next_epoch = ctx.first_epoch;
    let metrics = ctx.metrics;
    let control = ctx.control;
    let dlq_path = spec.dlq.path.display().to_string();
    let dlq_fail = |e: crate::dlq::DlqError| RunError::Dlq {
        path: dlq_path.clone(),
        message: e.to_string(),
    };
    let dlq_out = match barriers {
        // Checkpointed: dead letters of epoch n are appended to the file when checkpoint n
        // completes; the file holds what the restored checkpoint had committed.
        Some(b) => DlqOut::Epochs(
            crate::dlq::DlqEpochs::open(&spec.dlq.path, next_epoch, dlq_len).map_err(dlq_fail)?,
            b.clone(),
            sink_instances,
            senders,
        ),
        None => DlqOut::Plain(DlqWriter::open(&spec.dlq.path).map_err(dlq_fail)?),
    };
    let dlq_names = names.clone();
    let dlq_sink_index = spec
        .dlq
        .sink
        .as_ref()
        .and_then(|name| spec.sinks.iter().position(|s| &s.name == name));
    let (dlq_tx, dlq_rx) = bounded::<DlqMsg>(ctx.topology.channel_bound());
    let dlq_thread = {
        let metrics = metrics.clone();
        let ctl = control.clone();
        let path = dlq_path.clone();
        spawn("dlq", move || {
            run_dlq(dlq_out, names, dlq_rx, metrics, ctl, path)
        })?
    };
    let hub = SinkHub {
        sender: 0,
        sinks: sink_senders.clone(),
        dlq: dlq_tx,
        dlq_sink: dlq_sink_index.map(|sink| {
            Arc::new(outputs::DlqToSink {
                sink,
                names: dlq_names.clone(),
                metrics: metrics.clone(),
            })
        }),
    };
    drop(sink_senders);
    Ok((dlq_thread, hub))
}

/// What a task is handed as it starts: where its output goes and what it shares with the
/// rest of the run.
pub(super) struct TaskWiring<'a> {
    pub ctx: &'a RunContext<'a>,
    pub exchange: &'a LocalExchange,
    pub hub: &'a SinkHub,
    pub barriers: &'a Option<Barriers>,
}

impl TaskWiring<'_> {
    /// Where task `task` of stage `stage` sends its output: through the exchange to the next
    /// stage, or (the last stage) to the main-output sinks.
    fn downstream(&self, stage: usize, task: usize) -> Downstream {
        let topology = self.ctx.topology;
        if stage + 1 < topology.stages {
            self.exchange
                .downstream(stage, task, self.ctx.metrics.clone())
        } else {
            let sender = topology.sender(stage, task);
            Downstream::Sinks {
                task,
                sender,
                outputs: self
                    .ctx
                    .plan
                    .outputs
                    .iter()
                    .map(|&i| self.hub.instance_for(i, sender).clone())
                    .collect(),
                metrics: self.ctx.metrics.clone(),
                hub: SinkHub {
                    sender,
                    ..self.hub.clone()
                },
            }
        }
    }

    /// What task number `sender` (among all tasks) shares with the rest of the run.
    fn env(&self, sender: usize) -> TaskEnv {
        TaskEnv {
            hub: SinkHub {
                sender,
                ..self.hub.clone()
            },
            metrics: self.ctx.metrics.clone(),
            control: self.ctx.control.clone(),
            batch_size: self.ctx.spec.tuning.batch_size.max(1),
            barriers: self.barriers.clone(),
        }
    }
}

/// Starts the source tasks, each with its partitions and the first stage's steps.
pub(super) fn spawn_source_tasks(
    wiring: &TaskWiring<'_>,
    per_task: Vec<Vec<AssignedPartition>>,
) -> Result<Threads, RunError> {
    let control = wiring.ctx.control;
    let mut task_threads: Threads = Vec::new();
    for (task, assigned) in per_task.into_iter().enumerate() {
        let chain = wiring.ctx.plan.stages[0].chain(None, &control.cancel_signal())?;
        // Unaligned: the source task's barriers may overtake its own blocked sends.
        let downstream = wiring
            .downstream(0, task)
            .with_overtake(wiring.barriers.clone());
        let env = wiring.env(task);
        let name = format!("source-task-{task}");
        task_threads.push((
            name.clone(),
            spawn(&name, move || {
                tasks::run_source_task(task, assigned, chain, downstream, env)
            })?,
        ));
    }
    Ok(task_threads)
}

/// Starts the tasks of every stage after the first, each with its state store (opened on the
/// restored state, or fresh), its inbound channel from the exchange and its steps.
/// `silent_sources`: the source tasks without partitions (see `start::silent_tasks`).
pub(super) fn spawn_stage_tasks(
    wiring: &TaskWiring<'_>,
    restored: Option<&Restored>,
    silent_sources: &[usize],
) -> Result<Threads, RunError> {
    let spec = wiring.ctx.spec;
    let plan = wiring.ctx.plan;
    let control = wiring.ctx.control;
    let topology = wiring.ctx.topology;
    let parallelism = topology.parallelism;
    let mut task_threads: Threads = Vec::new();
    for stage in 1..topology.stages {
        for task in 0..parallelism {
            let (rx, priority) = wiring.exchange.inbound(stage, task);
            let store = if plan.stages[stage].has_state() {
                let dir = live_dir(&spec.state.dir, stage, task);
                Some(if restored.is_some() {
                    StateStore::open(&dir)?
                } else {
                    StateStore::open_fresh(&dir)?
                })
            } else {
                None
            };
            let chain = plan.stages[stage].chain(store.as_ref(), &control.cancel_signal())?;
            let downstream = wiring.downstream(stage, task);
            let env = wiring.env(topology.sender(stage, task));
            let slot = StageSlot {
                stage,
                task,
                key_groups: key_group_range(task, parallelism, spec.max_parallelism),
                store,
                restored_watermark: restored.map(|r| {
                    r.watermarks
                        .get(&(stage, task))
                        .copied()
                        .unwrap_or(crate::record::WATERMARK_START)
                }),
                restored_channel: restored
                    .and_then(|r| r.channel.get(&(stage, task)).cloned())
                    .unwrap_or_default(),
                silent_inputs: if stage == 1 {
                    silent_sources.to_vec()
                } else {
                    Vec::new()
                },
            };
            let upstream_tasks = wiring.exchange.upstream_tasks();
            let name = format!("stage-{stage}-task-{task}");
            task_threads.push((
                name.clone(),
                spawn(&name, move || {
                    tasks::run_stage_task(
                        rx,
                        priority,
                        upstream_tasks,
                        chain,
                        downstream,
                        env,
                        slot,
                    )
                })?,
            ));
        }
    }
    Ok(task_threads)
}

/// Starts a named thread whose end is the run's result (an error if it cannot start).
pub(super) fn spawn<F>(name: &str, f: F) -> Result<JoinHandle<Result<(), RunError>>, RunError>
where
    F: FnOnce() -> Result<(), RunError> + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|_| RunError::Panic {
            what: format!("{name} (could not start thread)"),
        })
}
