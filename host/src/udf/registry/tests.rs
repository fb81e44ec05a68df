//! The runtimes' own options, read from pipeline files through the registry, and what the
//! registry says about the runtimes.

use std::time::Duration;

use super::*;
use crate::config::spec::PipelineSpec;
use crate::config::ConfigErrors;
use crate::udf::go::{GoProgram, GoSpec};
use crate::udf::python::PythonSpec;
use crate::udf::wasm::WasmSpec;

fn load_str(text: &str, file: &str) -> Result<PipelineSpec, ConfigErrors> {
    crate::config::load_str(text, file, runtimes())
}

fn errors(text: &str) -> ConfigErrors {
    load_str(text, "p.yaml").expect_err("invalid")
}

#[test]
fn udf_references_and_runtimes_are_checked() {
    let e = errors("name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\nudfs:\n  f: { runtime: wasm, function: x }\n  h: { runtime: python, function: x }\n  i: { runtime: wasmer, function: x }\nsteps:\n  - udf: g\n");
    let r = e.to_string();
    assert!(r.contains("udf `f`: missing required key `module`"), "{r}");
    assert!(r.contains("`wasmer` is not one of the choices"), "{r}");
    assert!(r.contains("did you mean `wasm`"), "{r}");
    assert!(r.contains("udf `h`: missing required key `module`"), "{r}");
    assert!(r.contains("udf `g` is not declared"), "{r}");
}

#[test]
fn python_udfs_take_module_interpreter_workers_and_timeout() {
    let text = "name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\nudfs:\n  f: { runtime: python, module: my_udfs, function: enrich, python: .venv/bin/python, workers: 2, timeout: 5s }\n  g: { runtime: python, module: m, function: x, kind: flat_map }\n";
    let spec = load_str(text, "/p/pipeline.yaml").expect("valid");
    let Some(py) = spec.udfs[0].runtime.options::<PythonSpec>() else {
        panic!("python expected")
    };
    assert_eq!(py.module, "my_udfs");
    assert_eq!(
        py.interpreter,
        Some(std::path::PathBuf::from("/p/.venv/bin/python"))
    );
    assert_eq!(py.path, std::path::PathBuf::from("/p"));
    assert_eq!(
        (py.sidecar.workers, py.sidecar.timeout),
        (2, Duration::from_secs(5))
    );
    let Some(py) = spec.udfs[1].runtime.options::<PythonSpec>() else {
        panic!("python expected")
    };
    assert_eq!(
        (
            py.interpreter.clone(),
            py.sidecar.workers,
            py.sidecar.timeout
        ),
        (None, 1, Duration::from_secs(30))
    );
    assert_eq!(spec.udfs[1].kind, UdfKind::FlatMap);
    assert_eq!(
        (py.sidecar.batch_size, py.sidecar.endpoint.clone()),
        (512, None)
    );
}

#[test]
fn python_udfs_take_a_batch_size_an_endpoint_and_the_keyed_process_kind() {
    let text = "name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\nudfs:\n  f: { runtime: python, module: m, function: f, batch_size: 64, endpoint: 'http://127.0.0.1:50051', kind: keyed_process }\n";
    let spec = load_str(text, "/p/pipeline.yaml").expect("valid");
    let Some(py) = spec.udfs[0].runtime.options::<PythonSpec>() else {
        panic!("python expected")
    };
    assert_eq!(py.sidecar.batch_size, 64);
    assert_eq!(
        py.sidecar.endpoint.as_deref(),
        Some("http://127.0.0.1:50051")
    );
    assert_eq!(spec.udfs[0].kind, UdfKind::KeyedProcess);
    let e = errors("name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\nudfs:\n  f: { runtime: python, module: m, function: f, batch_size: 0, endpoint: 'tcp://x' }\n");
    let r = e.to_string();
    assert!(r.contains("batch_size must be at least 1"), "{r}");
    assert!(r.contains("endpoint `tcp://x` is neither"), "{r}");
}

#[test]
fn go_udfs_name_a_package_a_binary_or_an_endpoint() {
    let base = "name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\n";
    let spec = load_str(
        &format!("{base}udfs:\n  a: {{ runtime: go, package: ./udfs, function: enrich, workers: 2 }}\n  b: {{ runtime: go, binary: bin/w, function: f, kind: filter }}\n  c: {{ runtime: go, endpoint: 'unix:/tmp/w.sock', function: f }}\n"),
        "/p/pipeline.yaml",
    )
    .expect("valid");
    let Some(a) = spec.udfs[0].runtime.options::<GoSpec>() else {
        panic!("go expected")
    };
    assert_eq!(a.program, Some(GoProgram::Package("/p/udfs".into())));
    assert_eq!(a.sidecar.workers, 2);
    let Some(b) = spec.udfs[1].runtime.options::<GoSpec>() else {
        panic!("go expected")
    };
    assert_eq!(b.program, Some(GoProgram::Binary("/p/bin/w".into())));
    let Some(c) = spec.udfs[2].runtime.options::<GoSpec>() else {
        panic!("go expected")
    };
    assert_eq!(
        (c.program.clone(), c.sidecar.endpoint.as_deref()),
        (None, Some("unix:/tmp/w.sock"))
    );

    let e = errors(&format!(
        "{base}udfs:\n  a: {{ runtime: go, function: f }}\n  b: {{ runtime: go, binary: x, package: y, function: f }}\n  c: {{ runtime: go, binary: x, endpoint: 'unix:/s', function: f }}\n"
    ))
    .to_string();
    assert!(e.contains("a Go UDF needs `package`"), "{e}");
    assert!(e.contains("give `binary` or `package`, not both"), "{e}");
    assert!(e.contains("not both"), "{e}");
}

#[test]
fn wasm_udfs_name_a_module_relative_to_the_pipeline_with_sandbox_limits() {
    let base = "name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\n";
    let spec = load_str(
        &format!("{base}udfs:\n  a: {{ runtime: wasm, module: mod/u.wasm, function: enrich }}\n  b: {{ runtime: wasm, module: /abs/u.wasm, function: f, kind: keyed_process, memory: 16MiB, timeout: 250ms, allow: [clock, random] }}\n"),
        "/p/pipeline.yaml",
    )
    .expect("valid");
    let Some(a) = spec.udfs[0].runtime.options::<WasmSpec>() else {
        panic!("wasm expected")
    };
    assert_eq!(
        (
            a.module.as_path(),
            a.memory,
            a.timeout,
            a.allow_clock,
            a.allow_random
        ),
        (
            std::path::Path::new("/p/mod/u.wasm"),
            64 << 20,
            Duration::from_secs(5),
            false,
            false
        )
    );
    let Some(b) = spec.udfs[1].runtime.options::<WasmSpec>() else {
        panic!("wasm expected")
    };
    assert_eq!(
        (
            b.module.as_path(),
            b.memory,
            b.timeout,
            b.allow_clock,
            b.allow_random
        ),
        (
            std::path::Path::new("/abs/u.wasm"),
            16 << 20,
            Duration::from_millis(250),
            true,
            true
        )
    );
    assert_eq!(spec.udfs[1].kind, UdfKind::KeyedProcess);
    assert_eq!(spec.udfs[0].runtime.name(), "wasm");

    let e = errors(&format!(
        "{base}udfs:\n  a: {{ runtime: wasm, function: f }}\n  b: {{ runtime: wasm, module: m.wasm, function: f, memory: 64KiB, allow: network }}\n  c: {{ runtime: wasm, module: m.wasm, function: f, workers: 2 }}\n"
    ))
    .to_string();
    assert!(e.contains("udf `a`: missing required key `module`"), "{e}");
    assert!(e.contains("memory must be at least 1MiB"), "{e}");
    assert!(e.contains("`network` is not one of the choices"), "{e}");
    assert!(
        e.contains("workers"),
        "an option of another runtime is refused: {e}"
    );
}

#[test]
fn every_runtime_has_one_name_and_the_kinds_it_runs_are_known() {
    let names = runtimes().names();
    assert_eq!(names, ["native", "python", "python-inproc", "go", "wasm"]);
    for name in &names {
        assert!(runtimes().get(name).is_some(), "{name}");
    }
    assert_eq!(
        runtimes().running(FunctionKind::KeyedProcess),
        ["python", "go", "wasm"]
    );
    assert_eq!(
        runtimes().running(FunctionKind::WindowAggregate),
        ["python", "go"]
    );
    let help = runtimes().help();
    assert!(
        help.contains("python-inproc  Python functions called inside the host"),
        "{help}"
    );
}

#[test]
fn a_missing_runtime_lists_every_runtime() {
    let e = errors("name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\nudfs:\n  f: { function: x }\n").to_string();
    assert!(
        e.contains("hint: set `runtime: native`, `runtime: python`, `runtime: python-inproc`, `runtime: go` or `runtime: wasm`"),
        "{e}"
    );
}

#[test]
fn batching_comes_from_the_worker_options_or_the_default() {
    let spec = load_str("name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\nudfs:\n  f: { runtime: go, binary: w, function: f, batch_size: 64, linger: 5ms }\n  g: { runtime: native, function: identity }\n  h: { runtime: wasm, module: m.wasm, function: f }\n", "/p/p.yaml").expect("valid");
    let batching: Vec<CallBatching> = spec.udfs.iter().map(|u| runtimes().batching(u)).collect();
    assert_eq!(
        batching,
        [
            CallBatching {
                max_records: 64,
                linger: Duration::from_millis(5)
            },
            CallBatching::default(),
            CallBatching::default()
        ]
    );
}

#[test]
fn unsupported_kinds_name_the_runtimes_that_run_them() {
    let e = super::super::unsupported("python-inproc", "f", FunctionKind::KeyedProcess).to_string();
    assert_eq!(
        e,
        "the python-inproc runtime does not run keyed process functions (function `f`); runtimes that do: python, go, wasm"
    );
}

#[test]
fn every_runtime_option_is_documented_in_the_pipeline_reference() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pipeline.md"),
    )
    .expect("docs/pipeline.md");
    for name in runtimes().names() {
        // An unknown key is refused with the list of the keys the runtime read.
        let e = errors(&format!("name: p\nsources:\n  s: {{ type: stdin, event_time: {{ field: ts }} }}\nsinks:\n  o: {{ type: stdout }}\noutput: o\nudfs:\n  f: {{ runtime: {name}, function: f, not_an_option: 1 }}\n"));
        let keys: Vec<&str> = e
            .errors
            .iter()
            .filter_map(|e| e.hint.as_deref()?.split("valid keys here: ").nth(1))
            .flat_map(|list| list.split(", "))
            .collect();
        assert!(keys.contains(&"function"), "{name}: {e}");
        let missing: Vec<&&str> = keys
            .iter()
            .filter(|k| !doc.contains(&format!("`{k}`")) && !doc.contains(&format!("{k}:")))
            .collect();
        assert!(
            missing.is_empty(),
            "options of `runtime: {name}` not documented in docs/pipeline.md: {missing:?}"
        );
    }
}
