//! Turns a validated pipeline into stages: a stage is the steps between two `key_by`s, run
//! by P tasks; a shuffle by key group connects consecutive stages.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::spec::{LatePolicy, PipelineSpec, StepKind, UdfKind};
use crate::connectors::replay::ReplayEntry;
use crate::expr::Expr;
use crate::ops::breaker::Breaker;
use crate::ops::keyed::{KeyedProcess, KeyedProcessConfig};
use crate::ops::remedy::Remedy;
use crate::ops::retry::{CancelSignal, RetryPolicy};
use crate::ops::stateless::{Filter, KeyBy, Map};
use crate::ops::udf::{Batching, UdfStep};
use crate::ops::window::{LateTarget, UdfAggregate, WindowConfig, WindowOp};
use crate::ops::{step_name, Chain, Operator};
use crate::state::StateStore;
use crate::time::{millis, WindowAssigner};
use crate::udf::registry::{function_kind, runtimes, StartContext};
use crate::udf::{check_function, FunctionKind, UdfRuntime};
use crate::value::Str;

/// A problem found while planning (after the file itself was valid).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("steps[{step}] (line {line}): cannot compile expression `{expr}`: {message}")]
    Expr {
        step: usize,
        line: usize,
        expr: String,
        message: String,
    },
    #[error("udfs.{udf} (line {line}): {source}")]
    Udf {
        udf: String,
        line: usize,
        source: crate::udf::RuntimeError,
    },
    #[error("steps[{step}] (line {line}): {message}")]
    Step {
        step: usize,
        line: usize,
        message: String,
    },
}

/// One stateless or stateful operator, ready to be instantiated per task.
#[derive(Clone)]
enum OpPlan {
    Filter {
        step: String,
        expr: Expr,
    },
    Map {
        step: String,
        spec: crate::config::spec::MapSpec,
        compute: Vec<(Vec<Str>, Expr)>,
    },
    KeyBy {
        fields: Vec<Vec<Str>>,
    },
    Window(WindowConfig),
    Keyed(KeyedProcessConfig),
    Udf {
        step: String,
        runtime: Arc<dyn UdfRuntime>,
        function: String,
        kind: FunctionKind,
        batching: Batching,
        retry: RetryPolicy,
        breaker: Option<Arc<Breaker>>,
        remedy: Option<Remedy>,
    },
}

impl OpPlan {
    /// The operator for one task; stateful steps need the task's store.
    fn instantiate(
        &self,
        store: Option<&StateStore>,
        cancel: &CancelSignal,
    ) -> Result<Box<dyn Operator>, crate::state::StateError> {
        let needs_store = || {
            crate::state::StateError::Corrupt(
                "internal: a stateful step was planned without a state store".into(),
            )
        };
        Ok(match self.clone() {
            OpPlan::Filter { step, expr } => Box::new(Filter::new(step, expr)),
            OpPlan::Map {
                step,
                spec,
                compute,
            } => Box::new(Map::new(step, spec, compute)),
            OpPlan::KeyBy { fields } => Box::new(KeyBy::new(fields)),
            OpPlan::Window(cfg) => Box::new(
                WindowOp::new(cfg, store.ok_or_else(needs_store)?.clone())
                    .with_cancel(cancel.clone()),
            ),
            OpPlan::Keyed(cfg) => Box::new(
                KeyedProcess::new(cfg, store.ok_or_else(needs_store)?.clone())
                    .with_cancel(cancel.clone()),
            ),
            OpPlan::Udf {
                step,
                runtime,
                function,
                kind,
                batching,
                retry,
                breaker,
                remedy,
            } => Box::new(
                UdfStep::new(step, runtime, function, kind, retry)
                    .with_breaker(breaker)
                    .with_remedy(remedy)
                    .with_batching(batching)
                    .with_cancel(cancel.clone()),
            ),
        })
    }
}

/// The steps of one stage.
#[derive(Clone, Default)]
pub struct StagePlan {
    ops: Vec<OpPlan>,
    /// The pipeline's step index of each op.
    steps: Vec<usize>,
    /// True when the stage ends with a `key_by` and so feeds a shuffle.
    pub shuffles: bool,
}

impl StagePlan {
    /// Instantiates the operators for one task; stateful stages need the task's store. Waits
    /// between retry attempts end when `cancel` fires.
    pub fn chain(
        &self,
        store: Option<&StateStore>,
        cancel: &CancelSignal,
    ) -> Result<Chain, crate::state::StateError> {
        let ops = self
            .ops
            .iter()
            .map(|op| op.instantiate(store, cancel))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Chain::of_steps(ops, self.steps.clone()))
    }

    /// The stateful operators, as recorded in manifests (`s<stage>:op<id>:<kind>`).
    pub fn stateful_operators(&self, stage: usize) -> Vec<String> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                OpPlan::Window(w) => Some(format!("s{stage}:op{}:window", w.op_id)),
                OpPlan::Keyed(k) => Some(format!("s{stage}:op{}:keyed_process", k.op_id)),
                _ => None,
            })
            .collect()
    }

    pub fn has_state(&self) -> bool {
        self.ops
            .iter()
            .any(|op| matches!(op, OpPlan::Window(_) | OpPlan::Keyed(_)))
    }
}

/// What the first value-changing step of a pipeline does with records' source text.
enum TextUse {
    /// A udf step that sends records out as JSON: it sends the source's bytes.
    Sent,
    /// A step that makes new values: the text would be dropped unread.
    Dropped,
}

impl OpPlan {
    /// What this step means for source text, or None when it passes records on unchanged.
    fn text_use(&self) -> Option<TextUse> {
        match self {
            OpPlan::Filter { .. } | OpPlan::KeyBy { .. } => None,
            OpPlan::Udf { runtime, .. } if runtime.reads_source_text() => Some(TextUse::Sent),
            _ => Some(TextUse::Dropped),
        }
    }
}

/// The whole plan.
pub struct Plan {
    pub stages: Vec<StagePlan>,
    /// Sink indices (into `spec.sinks`) of the main output.
    pub outputs: Vec<usize>,
    /// The Wasm UDFs, whose modules can be replaced while the pipeline runs.
    pub wasm_udfs: Arc<crate::udf::wasm::versions::WasmUdfs>,
    /// The circuit breakers of the UDFs that udf steps call, by UDF name.
    pub breakers: Vec<(String, Arc<Breaker>)>,
}

/// A udf step on its own, to run records through outside a run (`headwater dlq replay`).
pub struct LoneUdfStep {
    pub operator: Box<dyn Operator>,
    /// The code it runs, as dead letters name it (`udf_version`: `python:sha256:...`).
    pub code: String,
}

impl Plan {
    /// The udf step named `step` (`steps[2] udf enrich`, as dead letters name it), or None.
    pub fn udf_step(&self, step: &str, cancel: &CancelSignal) -> Option<LoneUdfStep> {
        let op = self
            .stages
            .iter()
            .flat_map(|s| s.ops.iter())
            .find(|op| matches!(op, OpPlan::Udf { step: name, .. } if name == step))?;
        let OpPlan::Udf { runtime, .. } = op else {
            return None;
        };
        let code = runtime.udf_version();
        let operator = op.instantiate(None, cancel).ok()?;
        Some(LoneUdfStep { operator, code })
    }

    /// The steps replayed dead letters may enter at: every udf step (map, filter and flat
    /// map functions), with the `key_by` before it.
    pub fn replay_entries(&self) -> Vec<ReplayEntry> {
        let mut key_by: Option<KeyBy> = None;
        let mut entries = Vec::new();
        for stage in &self.stages {
            for (op, &step) in stage.ops.iter().zip(&stage.steps) {
                match op {
                    OpPlan::KeyBy { fields } => key_by = Some(KeyBy::new(fields.clone())),
                    OpPlan::Udf { step: name, .. } => entries.push(ReplayEntry {
                        step,
                        name: name.clone(),
                        key_by: key_by.clone(),
                    }),
                    _ => {}
                }
            }
        }
        entries
    }

    /// The names of the keyed process steps, in order.
    pub fn keyed_steps(&self) -> Vec<String> {
        self.stages
            .iter()
            .flat_map(|s| s.ops.iter())
            .filter_map(|op| match op {
                OpPlan::Keyed(k) => Some(k.step.clone()),
                _ => None,
            })
            .collect()
    }

    /// The names of the udf steps, in order.
    pub fn udf_steps(&self) -> Vec<String> {
        self.stages
            .iter()
            .flat_map(|s| s.ops.iter())
            .filter_map(|op| match op {
                OpPlan::Udf { step, .. } => Some(step.clone()),
                _ => None,
            })
            .collect()
    }

    /// True when sources should keep each record's bytes: the first step that changes or
    /// consumes values is a udf step that sends JSON out (a worker or Wasm runtime), which
    /// then sends those bytes instead of encoding the values again. Other pipelines would
    /// pay for a copy per record that nothing reads.
    pub fn sources_keep_text(&self) -> bool {
        let first = self
            .stages
            .iter()
            .flat_map(|s| s.ops.iter())
            .find_map(OpPlan::text_use);
        matches!(first, Some(TextUse::Sent))
    }

    pub fn build(spec: &PipelineSpec) -> Result<Plan, Vec<PlanError>> {
        let mut errors = Vec::new();
        let sink_index: HashMap<&str, usize> = spec
            .sinks
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut started = StartContext::default();
        let runtimes = runtimes_for(spec, &mut errors, &mut started);
        let mut stages = vec![StagePlan::default()];
        let mut key_names: Vec<Str> = Vec::new();
        let mut op_id: u16 = 0;
        let mut breakers: Vec<(String, Arc<Breaker>)> = Vec::new();
        for (i, step) in spec.steps.iter().enumerate() {
            let line = step.location.line;
            let compile = |text: &str, errors: &mut Vec<PlanError>| match Expr::parse(text) {
                Ok(e) => Some(e),
                Err(e) => {
                    errors.push(PlanError::Expr {
                        step: i,
                        line,
                        expr: text.to_string(),
                        message: e.to_string(),
                    });
                    None
                }
            };
            let op = match &step.kind {
                StepKind::Filter { expr } => {
                    compile(expr, &mut errors).map(|expr| OpPlan::Filter {
                        step: step_name(i, "filter"),
                        expr,
                    })
                }
                StepKind::Map(m) => {
                    let compute: Vec<_> = m
                        .compute
                        .iter()
                        .filter_map(|(path, text)| {
                            Some((path.clone(), compile(text, &mut errors)?))
                        })
                        .collect();
                    Some(OpPlan::Map {
                        step: step_name(i, "map"),
                        spec: m.clone(),
                        compute,
                    })
                }
                StepKind::KeyBy { fields } => {
                    key_names = fields
                        .iter()
                        .map(|p| p.last().cloned().unwrap_or_else(|| Str::from("key")))
                        .collect();
                    Some(OpPlan::KeyBy {
                        fields: fields.clone(),
                    })
                }
                StepKind::Window(w) => {
                    if key_names.is_empty() {
                        errors.push(PlanError::Step {
                            step: i,
                            line,
                            message: "a window needs a `key_by` step before it".into(),
                        });
                    }
                    let late = match &w.late {
                        LatePolicy::Drop => LateTarget::Drop,
                        LatePolicy::Dlq => LateTarget::Dlq,
                        LatePolicy::Sink(name) => match sink_index.get(name.as_str()) {
                            Some(&idx) => LateTarget::Sink(idx),
                            None => {
                                errors.push(PlanError::Step {
                                    step: i,
                                    line,
                                    message: format!(
                                        "late-data sink `{name}` is not declared in `sinks`"
                                    ),
                                });
                                LateTarget::Drop
                            }
                        },
                    };
                    let mut udf_aggs = Vec::with_capacity(w.aggregates.len());
                    for a in &w.aggregates {
                        let Some(name) = &a.udf else {
                            udf_aggs.push(None);
                            continue;
                        };
                        let declared = spec.udfs.iter().find(|u| &u.name == name);
                        match (declared, runtimes.get(name)) {
                            (Some(u), Some(rt)) if u.kind == UdfKind::WindowAggregate => udf_aggs
                                .push(Some(UdfAggregate {
                                    runtime: rt.clone(),
                                    function: u.function.clone(),
                                    retry: RetryPolicy::from(u.retry),
                                    breaker: Some(breaker_for(&mut breakers, u)),
                                })),
                            (Some(_), _) | (None, _) => {
                                if declared.is_some_and(|u| u.kind != UdfKind::WindowAggregate)
                                    || declared.is_none()
                                {
                                    errors.push(PlanError::Step {
                                        step: i,
                                        line,
                                        message: format!(
                                            "aggregate `{}`: `udf({name})` needs a udf declared with `kind: window_aggregate`",
                                            a.name
                                        ),
                                    });
                                }
                                udf_aggs.push(None);
                            }
                        }
                    }
                    op_id += 1;
                    Some(OpPlan::Window(WindowConfig {
                        udfs: udf_aggs,
                        step: step_name(i, "window"),
                        op_id,
                        assigner: WindowAssigner::from_kind(&w.kind),
                        allowed_lateness_ms: millis(w.allowed_lateness),
                        aggregates: w.aggregates.clone(),
                        key_names: key_names.clone(),
                        late,
                        max_parallelism: spec.max_parallelism,
                    }))
                }
                StepKind::Udf {
                    function,
                    remediate,
                } => match spec.udfs.iter().find(|u| &u.name == function) {
                    Some(udf) if udf.kind == UdfKind::WindowAggregate => {
                        errors.push(PlanError::Step {
                                step: i,
                                line,
                                message: format!(
                                    "udf `{function}` is a window aggregate: use it inside a window step, \
                                     e.g. `aggregates: {{ result: \"udf({function})\" }}`"
                                ),
                            });
                        None
                    }
                    Some(udf) if udf.kind == UdfKind::KeyedProcess => {
                        if key_names.is_empty() {
                            errors.push(PlanError::Step {
                                step: i,
                                line,
                                message: format!(
                                    "keyed process udf `{function}` needs a `key_by` step before it"
                                ),
                            });
                        }
                        op_id += 1;
                        runtimes.get(&udf.name).map(|rt| {
                            OpPlan::Keyed(KeyedProcessConfig {
                                step: step_name(i, &format!("udf {function}")),
                                op_id,
                                runtime: rt.clone(),
                                function: udf.function.clone(),
                                max_parallelism: spec.max_parallelism,
                                retry: RetryPolicy::from(udf.retry),
                                breaker: Some(breaker_for(&mut breakers, udf)),
                                remedy: remediate
                                    .as_ref()
                                    .and_then(|name| remedy(spec, &runtimes, name)),
                            })
                        })
                    }
                    Some(udf) => runtimes.get(&udf.name).map(|rt| OpPlan::Udf {
                        step: step_name(i, &format!("udf {function}")),
                        runtime: rt.clone(),
                        function: udf.function.clone(),
                        kind: function_kind(udf.kind),
                        batching: batching(udf, stages.len() == 1, spec),
                        remedy: remediate
                            .as_ref()
                            .and_then(|name| remedy(spec, &runtimes, name)),
                        retry: RetryPolicy::from(udf.retry),
                        breaker: Some(breaker_for(&mut breakers, udf)),
                    }),
                    None => {
                        errors.push(PlanError::Step {
                            step: i,
                            line,
                            message: format!("udf `{function}` is not declared in `udfs`"),
                        });
                        None
                    }
                },
            };
            if let Some(op) = op {
                let is_key_by = matches!(op, OpPlan::KeyBy { .. });
                if let Some(stage) = stages.last_mut() {
                    stage.ops.push(op);
                    stage.steps.push(i);
                    if is_key_by {
                        stage.shuffles = true;
                    }
                }
                if is_key_by {
                    stages.push(StagePlan::default());
                }
            }
        }
        let mut outputs = Vec::new();
        for name in &spec.output {
            match sink_index.get(name.as_str()) {
                Some(&i) => outputs.push(i),
                None => errors.push(PlanError::Step {
                    step: spec.steps.len(),
                    line: 0,
                    message: format!("output sink `{name}` is not declared in `sinks`"),
                }),
            }
        }
        if errors.is_empty() {
            Ok(Plan {
                stages,
                outputs,
                wasm_udfs: Arc::new(started.wasm_udfs),
                breakers,
            })
        } else {
            Err(errors)
        }
    }

    pub fn has_state(&self) -> bool {
        self.stages.iter().any(StagePlan::has_state)
    }
}

/// How the UDF step of `udf` gathers records into calls (its runtime says).
/// The circuit breaker of `udf`, made on its first use: every step and task calling the UDF
/// shares it.
fn breaker_for(
    breakers: &mut Vec<(String, Arc<Breaker>)>,
    udf: &crate::config::spec::UdfSpec,
) -> Arc<Breaker> {
    if let Some((_, b)) = breakers.iter().find(|(name, _)| name == &udf.name) {
        return b.clone();
    }
    let b = Arc::new(Breaker::new(&udf.name, udf.retry.breaker));
    breakers.push((udf.name.clone(), b.clone()));
    b
}

/// The remediation UDF `name` (checked by the configuration: a declared map or flat_map).
fn remedy(
    spec: &PipelineSpec,
    runtimes: &HashMap<String, Arc<dyn UdfRuntime>>,
    name: &str,
) -> Option<Remedy> {
    let udf = spec.udfs.iter().find(|u| u.name == name)?;
    Some(Remedy {
        udf: udf.name.clone(),
        runtime: runtimes.get(&udf.name)?.clone(),
        function: udf.function.clone(),
        kind: function_kind(udf.kind),
    })
}

/// How the UDF step calls `udf`. A step in a source task of an unaligned run is not
/// pipelined: a barrier may overtake a blocked send there only while the step holds nothing.
fn batching(
    udf: &crate::config::spec::UdfSpec,
    in_source_task: bool,
    spec: &PipelineSpec,
) -> Batching {
    let b = runtimes().batching(udf);
    let unaligned = spec.checkpoint.mode == crate::config::spec::CheckpointMode::Unaligned;
    Batching {
        max_records: b.max_records,
        linger: b.linger,
        pipelined: !(in_source_task && unaligned),
    }
}

/// One runtime per declared UDF (started by the runtime it names), each checked for the
/// function and its kind.
fn runtimes_for(
    spec: &PipelineSpec,
    errors: &mut Vec<PlanError>,
    started: &mut StartContext,
) -> HashMap<String, Arc<dyn UdfRuntime>> {
    let mut out = HashMap::new();
    for udf in &spec.udfs {
        let checked = runtimes().start(udf, started).and_then(|rt| {
            check_function(rt.as_ref(), &udf.function, function_kind(udf.kind))?;
            Ok(rt)
        });
        match checked {
            Ok(rt) => {
                out.insert(udf.name.clone(), rt);
            }
            Err(source) => errors.push(PlanError::Udf {
                udf: udf.name.clone(),
                line: udf.location.line,
                source,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udf::native::NativeRuntime;
    use crate::udf::{FunctionInfo, RecordOutcome, RuntimeError};
    use crate::value::Value;

    /// A runtime that sends JSON out, like the worker and Wasm runtimes.
    struct SendsJson;

    impl UdfRuntime for SendsJson {
        fn name(&self) -> &str {
            "sends-json"
        }
        fn functions(&self) -> Vec<FunctionInfo> {
            Vec::new()
        }
        fn invoke(&self, _: &str, v: Vec<Value>) -> Result<Vec<RecordOutcome>, RuntimeError> {
            Ok(v.into_iter().map(|v| Ok(vec![v])).collect())
        }
        fn reads_source_text(&self) -> bool {
            true
        }
    }

    fn udf(runtime: Arc<dyn UdfRuntime>) -> OpPlan {
        OpPlan::Udf {
            step: "steps[0] udf f".into(),
            runtime,
            function: "f".into(),
            kind: FunctionKind::Map,
            batching: Batching::default(),
            retry: RetryPolicy::default(),
            breaker: None,
            remedy: None,
        }
    }

    fn plan(stages: Vec<Vec<OpPlan>>) -> Plan {
        Plan {
            stages: stages
                .into_iter()
                .map(|ops| StagePlan {
                    steps: (0..ops.len()).collect(),
                    ops,
                    shuffles: false,
                })
                .collect(),
            outputs: Vec::new(),
            wasm_udfs: Default::default(),
            breakers: Vec::new(),
        }
    }

    #[test]
    fn sources_keep_text_only_for_a_first_udf_that_sends_json() {
        let sends = || udf(Arc::new(SendsJson));
        let native = || udf(Arc::new(NativeRuntime::with_builtins()));
        let filter = || OpPlan::Filter {
            step: "steps[0] filter".into(),
            expr: Expr::parse("true").expect("expr"),
        };
        let key_by = || OpPlan::KeyBy {
            fields: vec![vec!["k".into()]],
        };
        let map = || OpPlan::Map {
            step: "steps[0] map".into(),
            spec: Default::default(),
            compute: Vec::new(),
        };
        // Filters and key_by pass records on unchanged, across stages.
        assert!(plan(vec![vec![sends()]]).sources_keep_text());
        assert!(plan(vec![vec![filter(), key_by()], vec![sends()]]).sources_keep_text());
        // A step that makes new values first, or a runtime that reads values: no copy.
        assert!(!plan(vec![vec![map(), sends()]]).sources_keep_text());
        assert!(!plan(vec![vec![native(), sends()]]).sources_keep_text());
        assert!(!plan(vec![vec![filter()]]).sources_keep_text());
    }
}
