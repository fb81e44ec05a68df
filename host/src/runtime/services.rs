//! The run's services beside the data path, each on its own thread: the control API, the
//! checkpoint coordinator and the progress line.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

use crate::checkpoint::coordinator::{Barriers, Coordinator, Outcome, Setup};
use crate::checkpoint::participant::{CommitParticipant, PositionPublisher};
use crate::checkpoint::recovery::{Restored, StartPoint};
use crate::checkpoint::{CheckpointError, SavepointRequest};

use super::{control, control_udfs, RunContext, RunError, RunOptions};

/// Serves the control API when asked to (`--control`), with the routes of the Wasm modules
/// the run may switch; returns where savepoints it is asked for go (to the coordinator) and
/// the server, which stops when dropped.
pub(super) fn serve_control(
    ctx: &RunContext<'_>,
    restored: Option<&Restored>,
    opts: &RunOptions,
) -> Result<
    (
        Option<Receiver<SavepointRequest>>,
        Option<control::ControlServer>,
    ),
    RunError,
> {
    let spec = ctx.spec;
    // Wasm modules: the versions the restored checkpoint ran, and the module routes.
    let udf_control = control_udfs::prepare(
        spec,
        &ctx.plan.wasm_udfs,
        restored.map(|r| &r.manifest),
        opts.control.is_some(),
    );
    // Savepoints asked for through the control API go to the coordinator.
    let (savepoint_tx, savepoint_rx) = match (ctx.topology.checkpointing, opts.control.is_some()) {
        (true, true) => {
            let (tx, rx) = crossbeam_channel::unbounded();
            (Some(tx), Some(rx))
        }
        _ => (None, None),
    };
    let server = match opts.control {
        Some(address) => {
            let server = control::ControlServer::start_with_udfs(
                address,
                control::RunInfo {
                    pipeline: spec.name.clone(),
                    parallelism: ctx.topology.parallelism,
                },
                ctx.metrics.clone(),
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
    Ok((savepoint_rx, server))
}

/// What the coordinator takes over from the phases before it.
pub(super) struct Handover {
    /// What commits each sink instance's output (and the DLQ's), by (sink, instance).
    pub committers: HashMap<(String, usize), Arc<dyn CommitParticipant>>,
    /// Sources that publish their checkpointed positions (Kafka consumer groups).
    pub publishers: Vec<(String, Arc<dyn PositionPublisher>)>,
    /// Savepoints asked for through the control API.
    pub savepoints: Option<Receiver<SavepointRequest>>,
    /// Length of the dead-letter file as the run starts.
    pub dlq_len: u64,
    /// Sink instances across all sinks (each a checkpoint participant).
    pub sink_instances: usize,
}

/// The coordinator's thread, and what the run resumed from (stage tasks restore from it).
pub(super) struct Coordinating {
    pub handle: JoinHandle<Result<Outcome, CheckpointError>>,
    pub restored: Option<Restored>,
}

/// Starts the checkpoint coordinator of a checkpointed run (`start` is `Some`); returns the
/// barriers tasks and sinks inject and report with. Sinks are open by now: transactional ones
/// handed over their committers, and recovery finished their interrupted commits as they
/// opened.
pub(super) fn start_coordinator(
    ctx: &RunContext<'_>,
    start: Option<StartPoint>,
    handover: Handover,
) -> Result<(Option<Barriers>, Option<Coordinating>), RunError> {
    let spec = ctx.spec;
    let topology = ctx.topology;
    let Some(start) = start else {
        return Ok((None, None));
    };
    let wasm_udfs = &ctx.plan.wasm_udfs;
    let setup = Setup {
        spec: spec.checkpoint.clone(),
        pipeline: spec.name.clone(),
        parallelism: topology.parallelism,
        max_parallelism: spec.max_parallelism,
        operators: topology.operators.clone(),
        state_dir: spec.state.dir.clone(),
        participants: topology.participants(handover.sink_instances),
        next_id: start.next_id,
        // A storage that is down fails a checkpoint within its timeout (and 3 minutes).
        storage: start.storage.retrying_for(
            spec.checkpoint
                .timeout
                .min(std::time::Duration::from_secs(180)),
        )?,
        uploader: start.uploader,
        dlq_len: handover.dlq_len,
        control: ctx.control.clone(),
        publishers: handover.publishers,
        committers: handover.committers,
        savepoints: handover.savepoints,
        boundary: (!wasm_udfs.is_empty())
            .then(|| wasm_udfs.clone() as Arc<dyn crate::checkpoint::Boundary>),
        live_dirs: topology.live_dirs(&spec.state.dir),
    };
    let (coordinator, barriers) = Coordinator::new(setup, ctx.metrics.clone());
    let handle = std::thread::Builder::new()
        .name("checkpoint-coordinator".into())
        .spawn(move || coordinator.run())
        .map_err(|_| RunError::Panic {
            what: "checkpoint coordinator (could not start thread)".into(),
        })?;
    Ok((
        Some(barriers),
        Some(Coordinating {
            handle,
            restored: start.restored,
        }),
    ))
}

/// The progress line's thread (`--progress`), until told to stop.
pub(super) struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Prints the progress line every `tuning.progress_interval` when asked to.
    pub fn start(ctx: &RunContext<'_>, opts: &RunOptions) -> Self {
        let spec = ctx.spec;
        let progress_done = Arc::new(AtomicBool::new(false));
        let progress = (opts.progress && !spec.tuning.progress_interval.is_zero()).then(|| {
            let metrics = ctx.metrics.clone();
            let done = progress_done.clone();
            let interval = spec.tuning.progress_interval;
            let name = spec.name.clone();
            std::thread::spawn(move || {
                crate::metrics::report_progress(&name, &metrics, interval, &done)
            })
        });
        Progress {
            done: progress_done,
            thread: progress,
        }
    }

    /// Stops the progress line and waits for its last print.
    pub fn stop(self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(p) = self.thread {
            let _ = p.join();
        }
    }
}
