//! The top level of a pipeline file: its name, parallelism and every section, in order;
//! state, dead letters and tuning, which are a few keys each, are read here too.

use std::path::Path;

use super::checkpoint::checkpoint;
use super::decode::{duration, resolve, string, string_list, uint, valid_name, Errors, MapReader};
use super::retry::retry;
use super::sinks::{check_sink_ref, sinks};
use super::sources::sources;
use super::spec::*;
use super::steps::steps;
use super::udfs::{udfs, RuntimeCatalog};
use super::yaml::Node;

pub(super) fn pipeline(
    root: &Node,
    base: &Path,
    runtimes: &dyn RuntimeCatalog,
    errs: &mut Errors,
) -> Option<PipelineSpec> {
    let mut top = MapReader::new(root, "the pipeline file", errs)?;
    let name = match top.required(
        "name",
        errs,
        "add `name: my-pipeline` (letters, digits, `-`, `_`)",
    ) {
        Some(n) => {
            let s = string(n, "name", errs).unwrap_or_default();
            if !valid_name(&s) {
                errs.at(
                    n,
                    format!("name `{s}` may only use letters, digits, `-` and `_`"),
                    None,
                );
            }
            s
        }
        None => String::new(),
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let parallelism = match top.get("parallelism") {
        Some(n) => match uint(n, "parallelism", errs) {
            Some(0) => {
                errs.at(
                    n,
                    "parallelism must be at least 1",
                    Some("omit it to use one task per CPU core".into()),
                );
                1
            }
            Some(p) => p as usize,
            None => 1,
        },
        None => cores,
    };
    let max_parallelism = match top.get("max_parallelism") {
        Some(n) => {
            match uint(n, "max_parallelism", errs) {
                Some(m) if (1..=32768).contains(&m) => {
                    if (m as usize) < parallelism {
                        errs.at(n, format!("max_parallelism ({m}) must be at least parallelism ({parallelism})"), None);
                    }
                    m as u32
                }
                Some(m) => {
                    errs.at(
                        n,
                        format!("max_parallelism must be between 1 and 32768, not {m}"),
                        None,
                    );
                    128
                }
                None => 128,
            }
        }
        None => 128,
    };
    let sources = match top.required("sources", errs, "declare at least one source, e.g. `sources: { input: { type: file, path: in.jsonl, event_time: { field: ts } } }`") {
        Some(n) => sources(n, base, errs),
        None => Vec::new(),
    };
    let sinks = match top.required(
        "sinks",
        errs,
        "declare at least one sink, e.g. `sinks: { out: { type: stdout } }`",
    ) {
        Some(n) => sinks(n, base, errs),
        None => Vec::new(),
    };
    let sink_names: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
    let retry = top
        .get("retry")
        .map(|n| retry(n, "retry", RetrySpec::default(), errs))
        .unwrap_or_default();
    let udfs = top
        .get("udfs")
        .map(|n| udfs(n, base, runtimes, retry, errs))
        .unwrap_or_default();
    let steps = top
        .get("steps")
        .map(|n| steps(n, &sink_names, &udfs, errs))
        .unwrap_or_default();
    let output = match top.required(
        "output",
        errs,
        "name the sink(s) that receive the results, e.g. `output: out`",
    ) {
        Some(n) => string_list(n, "output", errs)
            .into_iter()
            .map(|(s, node)| {
                check_sink_ref(&s, node, &sink_names, "output", errs);
                s
            })
            .collect(),
        None => Vec::new(),
    };
    let default_dir = base.join(".headwater").join(&name);
    let state = StateSpec {
        dir: match top.get("state") {
            Some(n) => {
                let mut m = MapReader::new(n, "state", errs);
                let dir = m
                    .as_mut()
                    .and_then(|m| m.get("dir"))
                    .and_then(|d| string(d, "state.dir", errs));
                if let Some(m) = m {
                    m.finish(errs);
                }
                dir.map(|d| resolve(base, &d))
                    .unwrap_or_else(|| default_dir.join("state"))
            }
            None => default_dir.join("state"),
        },
    };
    let mut dlq = DlqSpec {
        path: default_dir.join("dlq.jsonl"),
        sink: None,
    };
    if let Some(n) = top.get("dlq") {
        if let Some(mut m) = MapReader::new(n, "dlq", errs) {
            let path = m.get("path");
            let sink = m.get("sink");
            if let (Some(p), Some(_)) = (path, sink) {
                errs.at(
                    p,
                    "dlq: give either `path` (a file) or `sink` (a declared sink), not both",
                    None,
                );
            }
            if let Some(d) = path.and_then(|d| string(d, "dlq.path", errs)) {
                dlq.path = resolve(base, &d);
            }
            if let Some(s) = sink {
                if let Some(name) = string(s, "dlq.sink", errs) {
                    let names: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
                    check_sink_ref(&name, s, &names, "dlq", errs);
                    dlq.sink = Some(name);
                }
            }
            m.finish(errs);
        }
    }
    let checkpoint = checkpoint(top.get("checkpoint"), base, &default_dir, errs);
    let tuning = top
        .get("tuning")
        .map(|n| tuning(n, errs))
        .unwrap_or_default();
    top.finish(errs);
    Some(PipelineSpec {
        name,
        parallelism,
        max_parallelism,
        sources,
        steps,
        sinks,
        output,
        udfs,
        retry,
        state,
        dlq,
        checkpoint,
        tuning,
        base_dir: base.to_path_buf(),
    })
}

fn tuning(node: &Node, errs: &mut Errors) -> TuningSpec {
    let mut t = TuningSpec::default();
    let Some(mut m) = MapReader::new(node, "tuning", errs) else {
        return t;
    };
    if let Some(n) = m.get("batch_size") {
        match uint(n, "tuning batch_size", errs) {
            Some(0) => errs.at(n, "tuning batch_size must be at least 1", None),
            Some(b) => t.batch_size = b as usize,
            None => {}
        }
    }
    if let Some(n) = m.get("channel_capacity") {
        match uint(n, "tuning channel_capacity", errs) {
            Some(0) => errs.at(n, "tuning channel_capacity must be at least 1", None),
            Some(c) => t.channel_capacity = c as usize,
            None => {}
        }
    }
    if let Some(n) = m.get("progress_interval") {
        if let Some(d) = duration(n, "tuning progress_interval", errs) {
            t.progress_interval = d;
        }
    }
    m.finish(errs);
    t
}
