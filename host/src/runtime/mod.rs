//! Runs a pipeline: opens sources, sinks, the DLQ and the state store, starts P source tasks
//! and P tasks per later stage (threads, since the work is CPU-bound), connects them with
//! bounded channels, and waits for the end of input (or a stop request).

pub mod control;
pub mod metrics;
pub mod outputs;
pub mod plan;
pub mod tasks;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::config::spec::PipelineSpec;
use crate::dlq::{DeadLetter, DlqWriter, Names};
use crate::ops::OpError;
use crate::sinks::{open_sink, Sink, SinkError};
use crate::sources::{open_source, SourceError};
use crate::state::{StateError, StateStore};
use crate::value::Value;

pub use metrics::{Metrics, RunSummary, Snapshot};
use outputs::{Downstream, Inbound, SinkHub};
pub use plan::{Plan, PlanError};
use tasks::{AssignedPartition, TaskEnv};

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

/// Shared run state: stop (drain and finish) and cancel (abort) requests.
#[derive(Debug, Default)]
pub struct RunControl {
    stop: AtomicBool,
    cancel: AtomicBool,
}

impl RunControl {
    pub fn new() -> Arc<Self> {
        Arc::new(RunControl::default())
    }

    /// Ends every source as if its input were exhausted: open windows fire, output is
    /// flushed, the run returns its summary.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Aborts the run after a fatal error.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// How the run reports progress.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Print the progress line to stderr every `tuning.progress_interval`.
    pub progress: bool,
    /// Serve the control API (`/status`, `/metrics`) on this address while running.
    pub control: Option<std::net::SocketAddr>,
}

/// Checks everything that can be checked without reading data: the plan (expressions, UDF
/// functions and kinds, references) and that every source can be opened.
pub fn check(spec: &PipelineSpec) -> Result<(), RunError> {
    Plan::build(spec).map_err(RunError::Plan)?;
    for (i, source) in spec.sources.iter().enumerate() {
        open_source(source, i as u16)?;
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

    // Sources, partitions spread round-robin over the source tasks.
    let mut names = Names::default();
    let mut per_task: Vec<Vec<AssignedPartition>> = (0..parallelism).map(|_| Vec::new()).collect();
    let mut next_task = 0usize;
    for (i, source) in spec.sources.iter().enumerate() {
        let partitions = open_source(source, i as u16)?;
        names.sources.push(source.name.clone());
        names
            .partitions
            .push(partitions.iter().map(|p| p.name().to_string()).collect());
        for partition in partitions {
            per_task[next_task % parallelism].push(AssignedPartition {
                partition,
                event_time: source.event_time.clone(),
            });
            next_task += 1;
        }
    }

    let store = StateStore::open_fresh(&spec.state.dir)?;
    let metrics = Arc::new(Metrics::new(parallelism));
    let _control_api = match opts.control {
        Some(address) => {
            let server = control::ControlServer::start(
                address,
                control::RunInfo {
                    pipeline: spec.name.clone(),
                    parallelism,
                },
                metrics.clone(),
            )?;
            tracing::info!(address = %server.address(), "control API: /status, /metrics");
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

    // Sinks and the DLQ, each drained by its own thread.
    let mut sink_threads = Vec::new();
    let mut sink_senders = Vec::new();
    for sink_spec in &spec.sinks {
        let sink = open_sink(sink_spec)?;
        let (tx, rx) = bounded::<Vec<Value>>(capacity * parallelism);
        let name = sink_spec.name.clone();
        let ctl = control.clone();
        sink_threads.push((
            name.clone(),
            spawn(&format!("sink-{name}"), move || run_sink(sink, rx, ctl))?,
        ));
        sink_senders.push(tx);
    }
    let dlq_path = spec.dlq.path.display().to_string();
    let dlq_writer = DlqWriter::open(&spec.dlq.path).map_err(|e| RunError::Dlq {
        path: dlq_path.clone(),
        message: e.to_string(),
    })?;
    let (dlq_tx, dlq_rx) = bounded::<Vec<DeadLetter>>(capacity * parallelism);
    let dlq_thread = {
        let metrics = metrics.clone();
        let ctl = control.clone();
        let path = dlq_path.clone();
        spawn("dlq", move || {
            run_dlq(dlq_writer, names, dlq_rx, metrics, ctl, path)
        })?
    };
    let hub = SinkHub {
        sinks: sink_senders.clone(),
        dlq: dlq_tx,
    };
    let outputs: Vec<Sender<Vec<Value>>> = plan
        .outputs
        .iter()
        .map(|&i| sink_senders[i].clone())
        .collect();
    drop(sink_senders);

    // Inbound channels of every stage after the first.
    let stage_count = plan.stages.len();
    let mut inbound: Vec<Vec<(Sender<Inbound>, Receiver<Inbound>)>> = (1..stage_count)
        .map(|_| {
            (0..parallelism)
                .map(|_| bounded(capacity * parallelism))
                .collect()
        })
        .collect();
    let downstream_for =
        |stage: usize, task: usize, inbound: &Vec<Vec<(Sender<Inbound>, Receiver<Inbound>)>>| {
            if stage + 1 < stage_count {
                let targets = inbound[stage].iter().map(|(tx, _)| tx.clone()).collect();
                Downstream::shuffle(task, targets, spec.max_parallelism, metrics.clone())
            } else {
                Downstream::Sinks {
                    task,
                    outputs: outputs.clone(),
                    metrics: metrics.clone(),
                }
            }
        };
    let env = |hub: &SinkHub| TaskEnv {
        hub: hub.clone(),
        metrics: metrics.clone(),
        control: control.clone(),
        batch_size: spec.tuning.batch_size.max(1),
    };

    let mut task_threads: Vec<(String, JoinHandle<Result<(), RunError>>)> = Vec::new();
    for (task, assigned) in per_task.into_iter().enumerate() {
        let chain = plan.stages[0].chain(&store);
        let downstream = downstream_for(0, task, &inbound);
        let env = env(&hub);
        let name = format!("source-task-{task}");
        task_threads.push((
            name.clone(),
            spawn(&name, move || {
                tasks::run_source_task(assigned, chain, downstream, env)
            })?,
        ));
    }
    for stage in 1..stage_count {
        for task in 0..parallelism {
            let rx = inbound[stage - 1][task].1.clone();
            let chain = plan.stages[stage].chain(&store);
            let downstream = downstream_for(stage, task, &inbound);
            let env = env(&hub);
            let name = format!("stage-{stage}-task-{task}");
            task_threads.push((
                name.clone(),
                spawn(&name, move || {
                    tasks::run_stage_task(rx, parallelism, chain, downstream, env)
                })?,
            ));
        }
    }
    // Only tasks hold senders now, so channels close as tasks finish.
    inbound.clear();
    drop(hub);
    drop(outputs);

    let progress_done = Arc::new(AtomicBool::new(false));
    let progress = (opts.progress && !spec.tuning.progress_interval.is_zero()).then(|| {
        let metrics = metrics.clone();
        let done = progress_done.clone();
        let interval = spec.tuning.progress_interval;
        let name = spec.name.clone();
        std::thread::spawn(move || metrics::report_progress(&name, &metrics, interval, &done))
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
            first_error.get_or_insert(e);
        }
    }
    if let Err(e) = dlq_thread
        .join()
        .unwrap_or_else(|_| Err(RunError::Panic { what: "dlq".into() }))
    {
        first_error.get_or_insert(e);
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
    })
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

fn run_sink(
    mut sink: Box<dyn Sink>,
    rx: Receiver<Vec<Value>>,
    control: Arc<RunControl>,
) -> Result<(), RunError> {
    let mut closed = false;
    for values in rx {
        if closed {
            continue; // keep draining so upstream never blocks on a closed output
        }
        match sink.write(&values) {
            Ok(()) => {}
            Err(SinkError::Closed { .. }) => {
                tracing::warn!("output closed by the reader; discarding the rest of its records");
                closed = true;
            }
            Err(e) => {
                control.cancel();
                return Err(e.into());
            }
        }
    }
    if !closed {
        match sink.flush() {
            Ok(()) | Err(SinkError::Closed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn run_dlq(
    mut writer: DlqWriter,
    names: Names,
    rx: Receiver<Vec<DeadLetter>>,
    metrics: Arc<Metrics>,
    control: Arc<RunControl>,
    path: String,
) -> Result<(), RunError> {
    let fail = |e: &dyn std::fmt::Display| RunError::Dlq {
        path: path.clone(),
        message: e.to_string(),
    };
    for batch in rx {
        for dl in &batch {
            if let Err(e) = writer.write(dl, &names) {
                control.cancel();
                return Err(fail(&e));
            }
            metrics.note_dead_letters(&dl.step, 1);
            metrics.note_failure(&dl.step, &dl.error, dl.detail.as_deref());
        }
    }
    writer.flush().map_err(|e| fail(&e))
}

/// Resolves `path` against the pipeline file's folder unless it is absolute.
pub fn resolve(base: &Path, path: &Path) -> std::path::PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}
