//! Runs a pipeline: opens sources, sinks, the DLQ and the state store, starts P source tasks
//! and P tasks per later stage (threads, since the work is CPU-bound), connects them with
//! bounded channels, and waits for the end of input (or a stop request).
//!
//! `run` is a list of phases over the run's `Topology` (`topology.rs`): where it starts
//! (`start.rs`: recovery, partitions assigned to source tasks), the sinks opening (`open.rs`),
//! the services beside the data path (`services.rs`: control API, checkpoint coordinator,
//! progress line), the threads (`spawn.rs`: sinks, DLQ, source and stage tasks, wired through
//! the shuffle's `exchange.rs`), and the end (`finish.rs`: joins, summary).

pub mod align;
pub mod control;
pub mod control_auth;
pub mod control_client;
mod control_prometheus;
pub mod control_udfs;
mod credits;
mod dlq_task;
pub mod dry_run;
mod exchange;
mod finish;
mod open;
pub mod outputs;
pub mod plan;
mod services;
mod sink_task;
mod source_task;
mod spawn;
mod stage_task;
mod start;
pub mod tasks;
mod topology;
pub mod unaligned;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint::recovery::StartMode;
use crate::checkpoint::{CheckpointError, CheckpointId};
use crate::config::spec::PipelineSpec;
use crate::connectors::open_source;
use crate::ops::OpError;
use crate::sinks::SinkError;
use crate::sources::SourceError;
use crate::state::StateError;

pub use crate::metrics::{CheckpointStats, Metrics, RunSummary, Snapshot};
pub use crate::run_control::RunControl;
use exchange::LocalExchange;
pub use open::recovery_participants;
use open::SinksOpening;
pub use plan::{Plan, PlanError};
use topology::Topology;

/// A failure that stops the run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{}", render_plan_errors(.0))]
    Plan(Vec<PlanError>),
    /// The run's records do not balance at its end (checked when HEADWATER_CHECK_ACCOUNTING
    /// is set, as the project's tests do): a bug in the host's counting or a lost record.
    #[error("the record accounting does not balance at the end of the run: {0}")]
    Accounting(String),
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

/// What every phase of a run reads: the pipeline, its plan and shape, the run's control and
/// counters.
struct RunContext<'a> {
    spec: &'a PipelineSpec,
    plan: &'a Plan,
    topology: &'a Topology,
    control: &'a Arc<RunControl>,
    metrics: &'a Arc<Metrics>,
    /// The epoch the run's first sink output belongs to (checkpoint n commits epoch n).
    first_epoch: CheckpointId,
}

/// Runs the pipeline to the end of its input (or until `control` asks it to stop).
///
/// The phases run in this order on purpose: the sinks open (on their own thread) while the
/// sources open; the coordinator starts only once the sinks are open (transactional sinks hand
/// it their committers, recovery finishes their interrupted commits as they open); the sink
/// and DLQ threads start before any task that sends to them; and the exchange, hub and
/// barriers are dropped once every task holds its own, so channels close as tasks end.
pub fn run(
    spec: &PipelineSpec,
    control: Arc<RunControl>,
    opts: RunOptions,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let plan = Plan::build(spec).map_err(RunError::Plan)?;
    let topology = Topology::new(spec, &plan);
    let start = start::start_point(spec, &topology, &opts)?;
    let first_epoch = start.as_ref().map_or(1, |s| s.next_id);
    let sinks_opening = SinksOpening::start(spec, &topology, start.as_ref(), first_epoch)?;
    let restored = start.as_ref().and_then(|s| s.restored.as_ref());
    let sources = start::assign_partitions(spec, &topology, restored, &opts)?;
    let metrics = Arc::new(Metrics::new(topology.parallelism));
    metrics.register_breakers(
        plan.breakers
            .iter()
            .map(|(udf, b)| (udf.clone(), b.status())),
    );
    if let Some(r) = restored {
        metrics.update_checkpoints(|c| c.restored_from = Some(r.manifest.id));
    }
    let ctx = RunContext {
        spec,
        plan: &plan,
        topology: &topology,
        control: &control,
        metrics: &metrics,
        first_epoch,
    };
    let (savepoints, _control_api) = services::serve_control(&ctx, restored, &opts)?;
    // Recovery cut the DLQ file back to what the restored checkpoint committed; new dead
    // letters are appended after what is there (the user may have emptied it).
    let dlq_len = std::fs::metadata(&spec.dlq.path)
        .map(|m| m.len())
        .unwrap_or(0);
    let opened = sinks_opening.join(spec)?;
    let sink_instances = opened.instance_count();
    let handover = services::Handover {
        committers: opened.committers,
        publishers: sources.publishers,
        savepoints,
        dlq_len,
        sink_instances,
    };
    let (barriers, coordinator) = services::start_coordinator(&ctx, start, handover)?;
    let restored = coordinator.as_ref().and_then(|c| c.restored.as_ref());
    let (sink_threads, sink_lanes) =
        spawn::spawn_sinks(&ctx, opened.instances, barriers.as_ref(), restored)?;
    let (dlq_thread, hub) = spawn::spawn_dlq(
        &ctx,
        barriers.as_ref(),
        sources.names,
        sink_lanes,
        sink_instances,
        dlq_len,
    )?;
    let exchange = LocalExchange::new(&topology);
    let wiring = spawn::TaskWiring {
        ctx: &ctx,
        exchange: &exchange,
        hub: &hub,
        barriers: &barriers,
    };
    let silent_sources = start::silent_tasks(&sources.per_task);
    let mut task_threads = spawn::spawn_source_tasks(&wiring, sources.per_task)?;
    task_threads.extend(spawn::spawn_stage_tasks(
        &wiring,
        restored,
        &silent_sources,
    )?);
    // Only tasks hold senders now, so channels close as tasks finish.
    drop(exchange);
    drop(hub);
    drop(barriers);
    let progress = services::Progress::start(&ctx, &opts);
    let running = finish::Running {
        tasks: task_threads,
        sinks: sink_threads,
        dlq: dlq_thread,
        coordinator,
        progress,
    };
    finish::finish(&ctx, started, running)
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
