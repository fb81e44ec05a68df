//! Runs a pipeline: opens sources, sinks, the DLQ and the state store, starts P source tasks
//! and P tasks per later stage (threads, since the work is CPU-bound), connects them with
//! bounded channels, and waits for the end of input (or a stop request).

pub mod align;
pub mod control;
pub mod control_auth;
pub mod control_client;
pub mod control_udfs;
mod credits;
mod dlq_task;
pub mod outputs;
pub mod plan;
mod sink_task;
mod source_task;
mod stage_task;
pub mod tasks;
pub mod unaligned;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::checkpoint::coordinator::{Coordinator, Setup};
use crate::checkpoint::participant::CommitParticipant;
use crate::checkpoint::recovery::{self, key_group_range, live_dir, Layout, StartMode};
use crate::checkpoint::{CheckpointError, Participant};
use crate::config::spec::{CheckpointMode, PipelineSpec, SinkKind};
use crate::connectors::{open_checkpointed_sink, open_sink, open_source};
use crate::dlq::{DlqWriter, Names};
use crate::ops::OpError;
use crate::sinks::{CheckpointedSinks, Sink, SinkError};
use crate::sources::SourceError;
use crate::state::{StateError, StateStore};

pub use crate::metrics::{CheckpointStats, Metrics, RunSummary, Snapshot};
pub use crate::run_control::RunControl;
use dlq_task::{run_dlq, DlqOut};
use outputs::{DlqMsg, Downstream, Inbound, SinkHub, SinkMsg};
pub use plan::{Plan, PlanError};
use sink_task::{run_sink, SinkCheckpointing};
use tasks::{AssignedPartition, StageSlot, TaskEnv};

/// A failure that stops the run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{}", render_plan_errors(.0))]
    Plan(Vec<PlanError>),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("dead-letter queue `{path}`: {message}")]
    Dlq { path: String, message: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("internal error: a {what} thread panicked; please report this with the pipeline file")]
    Panic { what: String },
}

fn render_plan_errors(errors: &[PlanError]) -> String {
    let mut s = String::new();
    for e in errors {
        s.push_str(&e.to_string());
        s.push('\n');
    }
    s.push_str(&format!("{} problem(s) found", errors.len()));
    s
}

/// How the run reports progress.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Print the progress line to stderr every `tuning.progress_interval`.
    pub progress: bool,
    /// Serve the control API (`/status`, `/metrics`) on this address while running.
    pub control: Option<std::net::SocketAddr>,
    /// The bearer token requests that change the run must carry (see `control_auth`).
    pub control_token: Option<control_auth::ControlToken>,
    /// Where to start when checkpoints are on (default: resume from the newest).
    pub start: StartMode,
}

/// Checks everything that can be checked without reading data: the plan (expressions, UDF
/// functions and kinds, references) and that every source can be opened.
pub fn check(spec: &PipelineSpec) -> Result<(), RunError> {
    Plan::build(spec).map_err(RunError::Plan)?;
    for (i, source) in spec.sources.iter().enumerate() {
        open_source(source, i as u16, &spec.name)?;
    }
    Ok(())
}

/// Runs the pipeline to the end of its input (or until `control` asks it to stop).
pub fn run(
    spec: &PipelineSpec,
    control: Arc<RunControl>,
    opts: RunOptions,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let plan = Plan::build(spec).map_err(RunError::Plan)?;
    let parallelism = spec.parallelism.max(1);
    let capacity = spec.tuning.channel_capacity.max(1);
    let stage_count = plan.stages.len();
    let checkpointing = spec.checkpoint.enabled;

    // Where the run starts: from scratch, or from a checkpoint (state, positions, sinks).
    let stateful_stages: Vec<usize> = (0..stage_count)
        .filter(|&s| plan.stages[s].has_state())
        .collect();
    let operators: Vec<String> = (0..stage_count)
        .flat_map(|s| plan.stages[s].stateful_operators(s))
        .collect();
    let start = if checkpointing {
        let layout = Layout {
            pipeline: &spec.name,
            state_dir: &spec.state.dir,
            parallelism,
            max_parallelism: spec.max_parallelism,
            stateful_stages: stateful_stages.clone(),
            operators: operators.clone(),
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

    // Sinks open on their own thread while the sources open (Kafka sinks take a few round
    // trips to the brokers, and finish interrupted commits first). Sink output of epoch n is
    // committed by checkpoint n.
    let next_epoch = start.as_ref().map_or(1, |s| s.next_id);
    let sinks_opening = {
        let sinks = spec.sinks.clone();
        let pipeline = spec.name.clone();
        let state_dir = spec.state.dir.clone();
        let interval = spec.checkpoint.interval;
        let tolerable_failures = spec.checkpoint.tolerable_failures;
        let checkpointed = start.as_ref().map(|s| {
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
            .map_err(|_| RunError::Panic {
                what: "opening the sinks (could not start thread)".into(),
            })?
    };

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
    let metrics = Arc::new(Metrics::new(parallelism));
    if let Some(r) = restored {
        metrics.update_checkpoints(|c| c.restored_from = Some(r.manifest.id));
    }
    // Wasm modules: the versions the restored checkpoint ran, and the module routes.
    let wasm_udfs = plan.wasm_udfs.clone();
    let udf_control = control_udfs::prepare(
        spec,
        &wasm_udfs,
        restored.map(|r| &r.manifest),
        opts.control.is_some(),
    );
    // Savepoints asked for through the control API go to the coordinator.
    let (savepoint_tx, savepoint_rx) = match (checkpointing, opts.control.is_some()) {
        (true, true) => {
            let (tx, rx) = crossbeam_channel::unbounded();
            (Some(tx), Some(rx))
        }
        _ => (None, None),
    };
    let _control_api = match opts.control {
        Some(address) => {
            let server = control::ControlServer::start_with_udfs(
                address,
                control::RunInfo {
                    pipeline: spec.name.clone(),
                    parallelism,
                },
                metrics.clone(),
                savepoint_tx,
                opts.control_token.clone(),
                udf_control,
            )?;
            tracing::info!(
                address = %server.address(),
                "control API: GET /status, GET /metrics, POST /savepoint?to=PATH"
            );
            if opts.progress {
                eprintln!(
                    "control API on http://{0}/status and http://{0}/metrics",
                    server.address()
                );
            }
            Some(server)
        }
        None => None,
    };

    // The checkpoint coordinator.
    let senders = parallelism * stage_count;
    // Recovery cut the DLQ file back to what the restored checkpoint committed; new dead
    // letters are appended after what is there (the user may have emptied it).
    let dlq_len = std::fs::metadata(&spec.dlq.path)
        .map(|m| m.len())
        .unwrap_or(0);
    // Sinks open before the coordinator: transactional ones hand it their committers, and
    // recovery finishes their interrupted commits as they open.
    let (opened_sinks, mut committers) = sinks_opening.join().unwrap_or_else(|_| {
        Err(RunError::Panic {
            what: "opening the sinks".into(),
        })
    })?;
    committers.insert(
        (crate::dlq::DLQ_PARTICIPANT.to_string(), 0),
        Arc::new(crate::dlq::DlqFileCommitter::new(&spec.dlq.path)),
    );
    // Every sink instance is one checkpoint participant, numbered across sinks; the DLQ is the
    // last.
    let sink_instances: usize = opened_sinks.iter().map(Vec::len).sum();
    let (barriers, coordinator) = match start {
        Some(start) => {
            let mut participants: Vec<Participant> = (0..parallelism)
                .map(|task| Participant::Source { task })
                .collect();
            for stage in 1..stage_count {
                participants
                    .extend((0..parallelism).map(|task| Participant::Stage { stage, task }));
            }
            // The DLQ takes part as one more sink, after the declared ones.
            participants.extend((0..=sink_instances).map(|sink| Participant::Sink { sink }));
            let setup = Setup {
                spec: spec.checkpoint.clone(),
                pipeline: spec.name.clone(),
                parallelism,
                max_parallelism: spec.max_parallelism,
                operators,
                state_dir: spec.state.dir.clone(),
                participants,
                next_id: start.next_id,
                // A storage that is down fails a checkpoint within its timeout (and 3 minutes).
                storage: start.storage.retrying_for(
                    spec.checkpoint
                        .timeout
                        .min(std::time::Duration::from_secs(180)),
                )?,
                uploader: start.uploader,
                dlq_len,
                control: control.clone(),
                publishers,
                committers,
                savepoints: savepoint_rx,
                boundary: (!wasm_udfs.is_empty())
                    .then(|| wasm_udfs.clone() as Arc<dyn crate::checkpoint::Boundary>),
                live_dirs: stateful_stages
                    .iter()
                    .flat_map(|&stage| {
                        (0..parallelism).map(move |task| {
                            (
                                crate::checkpoint::coordinator::task_dir_name(stage, task),
                                live_dir(&spec.state.dir, stage, task),
                            )
                        })
                    })
                    .collect(),
            };
            let (coordinator, barriers) = Coordinator::new(setup, metrics.clone());
            let handle = std::thread::Builder::new()
                .name("checkpoint-coordinator".into())
                .spawn(move || coordinator.run())
                .map_err(|_| RunError::Panic {
                    what: "checkpoint coordinator (could not start thread)".into(),
                })?;
            (Some(barriers), Some((handle, start.restored)))
        }
        None => (None, None),
    };

    // Sink instances and the DLQ, each drained by its own thread.
    let unaligned = checkpointing && spec.checkpoint.mode == CheckpointMode::Unaligned;
    let restored_sink_channel = coordinator
        .as_ref()
        .and_then(|(_, r)| r.as_ref())
        .map(|r| &r.sink_channel);
    let mut sink_threads = Vec::new();
    let mut sink_senders: Vec<Vec<outputs::SinkLane>> = Vec::with_capacity(spec.sinks.len());
    let mut participant = 0;
    for (sink_spec, instances) in spec.sinks.iter().zip(opened_sinks) {
        let count = instances.len();
        let mut senders_of_sink = Vec::with_capacity(count);
        for (instance, sink) in instances.into_iter().enumerate() {
            let (tx, rx) = bounded::<SinkMsg>(capacity * parallelism);
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
            let ckpt = barriers.clone().map(|b| SinkCheckpointing {
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
    let dlq_path = spec.dlq.path.display().to_string();
    let dlq_fail = |e: crate::dlq::DlqError| RunError::Dlq {
        path: dlq_path.clone(),
        message: e.to_string(),
    };
    let dlq_out = match &barriers {
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
    let (dlq_tx, dlq_rx) = bounded::<DlqMsg>(capacity * parallelism);
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

    // Inbound channels of every stage after the first.
    let mut inbound: Vec<Vec<(Sender<Inbound>, Receiver<Inbound>)>> = (1..stage_count)
        .map(|_| {
            (0..parallelism)
                .map(|_| bounded(capacity * parallelism))
                .collect()
        })
        .collect();
    // Unaligned checkpoints: each stage task also has a priority lane barriers take.
    type Lane = (
        Sender<tasks::PriorityBarrier>,
        Receiver<tasks::PriorityBarrier>,
    );
    let lanes: Vec<Vec<Lane>> = (1..stage_count)
        .map(|_| {
            (0..parallelism)
                .map(|_| crossbeam_channel::unbounded())
                .collect()
        })
        .collect();
    // Unaligned: per stage boundary and receiving task, how many messages it has handled
    // from each sending task (see `Downstream::with_credits`).
    let handled: Vec<Vec<outputs::Credits>> = (1..stage_count)
        .map(|_| {
            (0..parallelism)
                .map(|_| outputs::CreditCounters::new(parallelism))
                .collect()
        })
        .collect();
    let downstream_for =
        |stage: usize, task: usize, inbound: &Vec<Vec<(Sender<Inbound>, Receiver<Inbound>)>>| {
            if stage + 1 < stage_count {
                let targets = inbound[stage].iter().map(|(tx, _)| tx.clone()).collect();
                let priority =
                    unaligned.then(|| lanes[stage].iter().map(|(tx, _)| tx.clone()).collect());
                Downstream::shuffle(task, targets, spec.max_parallelism, metrics.clone())
                    .with_priority(priority)
                    .with_credits(unaligned.then(|| (handled[stage].clone(), capacity as u64)))
            } else {
                let sender = stage * parallelism + task;
                Downstream::Sinks {
                    task,
                    sender,
                    outputs: plan
                        .outputs
                        .iter()
                        .map(|&i| hub.instance_for(i, sender).clone())
                        .collect(),
                    metrics: metrics.clone(),
                    hub: SinkHub {
                        sender,
                        ..hub.clone()
                    },
                }
            }
        };
    let env = |hub: &SinkHub, sender: usize| TaskEnv {
        hub: SinkHub {
            sender,
            ..hub.clone()
        },
        metrics: metrics.clone(),
        control: control.clone(),
        batch_size: spec.tuning.batch_size.max(1),
        barriers: barriers.clone(),
    };

    let mut task_threads: Vec<(String, JoinHandle<Result<(), RunError>>)> = Vec::new();
    // Source tasks without a partition send no records and no watermark but +inf: the first
    // later stage leaves them out of its watermark from the start, so its output does not
    // depend on when their end arrives.
    let silent_sources: Vec<usize> = (0..parallelism)
        .filter(|&t| per_task[t].is_empty())
        .collect();
    for (task, assigned) in per_task.into_iter().enumerate() {
        let chain = plan.stages[0].chain(None, &control.cancel_signal())?;
        // Unaligned: the source task's barriers may overtake its own blocked sends.
        let downstream = downstream_for(0, task, &inbound).with_overtake(barriers.clone());
        let env = env(&hub, task);
        let name = format!("source-task-{task}");
        task_threads.push((
            name.clone(),
            spawn(&name, move || {
                tasks::run_source_task(task, assigned, chain, downstream, env)
            })?,
        ));
    }
    let restored = coordinator.as_ref().and_then(|(_, r)| r.as_ref());
    for stage in 1..stage_count {
        for task in 0..parallelism {
            let rx = inbound[stage - 1][task].1.clone();
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
            let downstream = downstream_for(stage, task, &inbound);
            let env = env(&hub, stage * parallelism + task);
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
                    silent_sources.clone()
                } else {
                    Vec::new()
                },
            };
            let priority = unaligned.then(|| unaligned::UnalignedInput {
                priority: lanes[stage - 1][task].1.clone(),
                credits: handled[stage - 1][task].clone(),
                aligned_timeout: spec.checkpoint.aligned_timeout,
            });
            let name = format!("stage-{stage}-task-{task}");
            task_threads.push((
                name.clone(),
                spawn(&name, move || {
                    tasks::run_stage_task(rx, priority, parallelism, chain, downstream, env, slot)
                })?,
            ));
        }
    }
    // Only tasks hold senders now, so channels close as tasks finish.
    inbound.clear();
    drop(lanes);
    drop(hub);
    drop(barriers);

    let progress_done = Arc::new(AtomicBool::new(false));
    let progress = (opts.progress && !spec.tuning.progress_interval.is_zero()).then(|| {
        let metrics = metrics.clone();
        let done = progress_done.clone();
        let interval = spec.tuning.progress_interval;
        let name = spec.name.clone();
        std::thread::spawn(move || {
            crate::metrics::report_progress(&name, &metrics, interval, &done)
        })
    });

    let mut first_error: Option<RunError> = None;
    for (name, handle) in task_threads {
        let result = handle
            .join()
            .unwrap_or_else(|_| Err(RunError::Panic { what: name.clone() }));
        if let Err(e) = result {
            tracing::error!(task = %name, error = %e, "task failed");
            control.cancel();
            first_error.get_or_insert(e);
        }
    }
    for (name, handle) in sink_threads {
        let result = handle.join().unwrap_or_else(|_| {
            Err(RunError::Panic {
                what: format!("sink {name}"),
            })
        });
        if let Err(e) = result {
            control.cancel();
            first_error.get_or_insert(e);
        }
    }
    if let Err(e) = dlq_thread
        .join()
        .unwrap_or_else(|_| Err(RunError::Panic { what: "dlq".into() }))
    {
        first_error.get_or_insert(e);
    }
    let mut outcome = None;
    if let Some((handle, _)) = coordinator {
        match handle.join() {
            Ok(Ok(o)) => outcome = Some(o),
            Ok(Err(e)) => {
                first_error.get_or_insert(e.into());
            }
            Err(_) => {
                first_error.get_or_insert(RunError::Panic {
                    what: "checkpoint coordinator".into(),
                });
            }
        }
    }
    progress_done.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.join();
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let dlq_by_step = metrics
        .dlq_by_step
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let first_failures = metrics
        .first_failures
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    Ok(RunSummary {
        first_failures,
        pipeline: spec.name.clone(),
        elapsed: started.elapsed(),
        parallelism,
        totals: metrics.snapshot(),
        dlq_by_step,
        dlq_path,
        stopped_early: control.stop_requested(),
        checkpoints: checkpointing.then(|| metrics.checkpoint_stats()),
        stopped_at_checkpoint: outcome.as_ref().is_some_and(|o| o.stopped),
    })
}

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

/// The sinks' instances, per sink, and what commits each instance's epochs, by (sink,
/// instance).
type OpenedSinks = (
    Vec<Vec<Box<dyn Sink>>>,
    std::collections::HashMap<(String, usize), Arc<dyn CommitParticipant>>,
);

/// Opens every sink: Kafka sinks one instance per task, the others one; for a checkpointed
/// run (`ctx`) in two-phase mode.
fn open_sinks(
    sinks: &[crate::config::spec::SinkSpec],
    pipeline: &str,
    parallelism: usize,
    ctx: Option<&CheckpointedSinks<'_>>,
) -> Result<OpenedSinks, RunError> {
    let mut opened_sinks: Vec<Vec<Box<dyn Sink>>> = Vec::with_capacity(sinks.len());
    let mut committers = std::collections::HashMap::new();
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

fn spawn<F>(name: &str, f: F) -> Result<JoinHandle<Result<(), RunError>>, RunError>
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

/// A partition's identity in checkpoints: for a file, its path relative to the pipeline's
/// folder (however the pipeline path was spelled on the command line, and wherever the
/// project folder was moved); otherwise its name.
pub fn partition_key(base_dir: &Path, name: &str) -> String {
    let path = Path::new(name);
    let (Ok(file), Ok(base)) = (
        std::fs::canonicalize(path),
        std::fs::canonicalize(if base_dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base_dir
        }),
    ) else {
        return name.to_string();
    };
    match file.strip_prefix(&base) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => file.display().to_string(),
    }
}

/// Resolves `path` against the pipeline file's folder unless it is absolute.
pub fn resolve(base: &Path, path: &Path) -> std::path::PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}
