//! Runs records through the current code of one udf step, writing nothing: how many of a
//! dead-letter group would now succeed (`headwater dlq replay --dry-run`).

use crate::config::spec::PipelineSpec;
use crate::ops::retry::CancelSignal;
use crate::ops::{Context, OpError};
use crate::record::{Record, WATERMARK_END};

use super::plan::{Plan, PlanError};

/// Records per call, as a task's batches.
const BATCH: usize = 512;

/// What running the records through the step gave.
#[derive(Debug, Default, PartialEq)]
pub struct DryRun {
    /// The code the step runs now (`python:sha256:...`).
    pub code: String,
    pub records: usize,
    /// Records the step (or its remediation) took without giving up on them.
    pub succeeded: usize,
    /// Records it would output (a flat map may make several of one, a filter none).
    pub outputs: usize,
    /// Records its remediation would drop.
    pub dropped: usize,
    /// Records it would give up on again, by cause, most first.
    pub failed: Vec<Failure>,
}

/// Records that would fail again for one cause.
#[derive(Debug, PartialEq)]
pub struct Failure {
    pub fingerprint: String,
    /// The first one's error.
    pub error: String,
    pub count: usize,
}

/// Failures to run the step (not the records' failures: those are counted).
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Plan(Vec<PlanError>),
    #[error("the pipeline has no step `{step}` now (its udf steps: {steps}); did the steps change since these records failed?")]
    NoStep { step: String, steps: String },
    #[error("`{step}` is a keyed process step: its records cannot be run again or replayed yet (each call needs its key's state as it was, which lives in the running pipeline); only map, filter and flat_map udf steps can")]
    KeyedStep { step: String },
    #[error(transparent)]
    Op(#[from] OpError),
}

/// Starts the pipeline's UDFs and runs `records` through the udf step named `step`.
pub fn dry_run(
    spec: &PipelineSpec,
    step: &str,
    records: Vec<Record>,
) -> Result<DryRun, DryRunError> {
    let plan = Plan::build(spec).map_err(DryRunError::Plan)?;
    let cancel = CancelSignal::new();
    if plan.keyed_steps().iter().any(|s| s == step) {
        return Err(DryRunError::KeyedStep {
            step: step.to_string(),
        });
    }
    let Some(mut lone) = plan.udf_step(step, &cancel) else {
        return Err(DryRunError::NoStep {
            step: step.to_string(),
            steps: match plan.udf_steps() {
                s if s.is_empty() => "none".into(),
                s => s.join(", "),
            },
        });
    };
    let mut ctx = Context::default();
    let mut outputs = 0;
    for chunk in records.chunks(BATCH) {
        outputs += lone.operator.process(chunk.to_vec(), &mut ctx)?.len();
    }
    // The end of the input: a step holding calls in flight releases them.
    outputs += lone.operator.on_watermark(WATERMARK_END, &mut ctx)?.len();
    let mut failed: Vec<Failure> = Vec::new();
    for d in &ctx.dead {
        let (_, fingerprint) = d.cause();
        match failed.iter_mut().find(|f| f.fingerprint == fingerprint) {
            Some(f) => f.count += 1,
            None => failed.push(Failure {
                fingerprint,
                error: d.error.clone(),
                count: 1,
            }),
        }
    }
    failed.sort_by_key(|f| std::cmp::Reverse(f.count));
    let dropped = ctx.remediation_dropped as usize;
    Ok(DryRun {
        code: lone.code,
        records: records.len(),
        succeeded: records.len().saturating_sub(ctx.dead.len() + dropped),
        outputs,
        dropped,
        failed,
    })
}
