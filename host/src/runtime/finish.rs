//! The end of a run: waits for every thread, keeps the first failure (cancelling the rest),
//! and builds the summary.

use std::thread::JoinHandle;
use std::time::Instant;

use super::services::{Coordinating, Progress};
use super::spawn::Threads;
use super::{RunContext, RunError, RunSummary};

/// The threads of a running pipeline, in the order they are waited for.
pub(super) struct Running {
    pub tasks: Threads,
    pub sinks: Threads,
    pub dlq: JoinHandle<Result<(), RunError>>,
    pub coordinator: Option<Coordinating>,
    pub progress: Progress,
}

/// Waits for the tasks, then the sinks, the DLQ writer and the coordinator (which writes the
/// final checkpoint once every participant finished). A failed task or sink cancels the run;
/// the first failure is the run's error.
pub(super) fn finish(
    ctx: &RunContext<'_>,
    started: Instant,
    running: Running,
) -> Result<RunSummary, RunError> {
    let spec = ctx.spec;
    let control = ctx.control;
    let metrics = ctx.metrics;
    let Running {
        tasks: task_threads,
        sinks: sink_threads,
        dlq: dlq_thread,
        coordinator,
        progress,
    } = running;
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
    if let Some(Coordinating { handle, .. }) = coordinator {
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
    progress.stop();
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
    let totals = metrics.snapshot();
    let stopped_early = control.stop_requested();
    // The project's own tests set this: every run they make checks that each record ended
    // exactly once (`Accounting`); users see the equation in the summary instead.
    if !stopped_early && std::env::var_os("HEADWATER_CHECK_ACCOUNTING").is_some() {
        let a = totals.accounting();
        if a.in_flight() != 0 {
            return Err(RunError::Accounting(format!(
                "{a:?} leaves {} record(s) unaccounted for",
                a.in_flight()
            )));
        }
    }
    Ok(RunSummary {
        first_failures,
        pipeline: spec.name.clone(),
        elapsed: started.elapsed(),
        parallelism: ctx.topology.parallelism,
        totals,
        dlq_by_step,
        dlq_path: spec.dlq.path.display().to_string(),
        stopped_early,
        checkpoints: ctx
            .topology
            .checkpointing
            .then(|| metrics.checkpoint_stats()),
        stopped_at_checkpoint: outcome.as_ref().is_some_and(|o| o.stopped),
        outages: metrics.outages(),
    })
}
