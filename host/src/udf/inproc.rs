//! The in-process Python runtime (`runtime: python-inproc`): CPython embedded in the host
//! (pyo3), calling functions directly with no protocol and no sockets. For trusted code, and as
//! the baseline the sidecar runtime is measured against: a function that crashes or leaks
//! takes the host with it, and all tasks share one interpreter lock.
//!
//! The user's virtual environment is honoured by asking its interpreter for its `sys.path`
//! (which must be the same Python minor version the host embeds) and adding that to the
//! embedded interpreter's.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::python::PythonSpec;
use super::registry::{options, CallBatching, RuntimePlugin, StartContext};
use super::worker;
use super::{
    outputs_from_json, start_error, FunctionInfo, FunctionKind, RecordOutcome, RuntimeError,
    UdfRuntime,
};
use crate::config::spec::{UdfRuntimeSpec, UdfSpec};
use crate::config::OptionsReader;
use crate::record::Record;
use crate::value::Value;
use headwater_sdk::{ErrorClass, FunctionError};

/// How start-up errors name this runtime.
const WORKER: &str = "in-process Python runtime";

/// `runtime: python-inproc`: the options of `runtime: python`, read the same way.
pub struct PythonInproc;

impl RuntimePlugin for PythonInproc {
    fn name(&self) -> &'static str {
        "python-inproc"
    }

    fn summary(&self) -> &'static str {
        "Python functions called inside the host (embedded CPython; the options of `python`)"
    }

    fn read_options(&self, r: &mut OptionsReader<'_, '_>) -> Option<UdfRuntimeSpec> {
        PythonSpec::read(r).map(|spec| UdfRuntimeSpec::new(self.name(), spec))
    }

    fn batching(&self, udf: &UdfSpec) -> CallBatching {
        worker::batching::<PythonSpec>(udf)
    }

    fn start(
        &self,
        udf: &UdfSpec,
        _ctx: &mut StartContext,
    ) -> Result<Arc<dyn UdfRuntime>, RuntimeError> {
        Ok(Arc::new(InprocRuntime::start(&udf.name, options(udf)?)?))
    }
}

/// A UDF runtime running Python functions inside the host process.
pub struct InprocRuntime {
    udf: String,
    functions: Vec<FunctionInfo>,
    call_batch: Py<PyAny>,
    /// What identifies the loaded functions' code (empty with an SDK that cannot say).
    code_version: String,
}

/// The `sys.path` of `interpreter`, if it is the same `major.minor` as the embedded one.
fn venv_sys_path(
    udf: &str,
    interpreter: &PathBuf,
    embedded: (u8, u8),
) -> Result<Vec<String>, RuntimeError> {
    let out = Command::new(interpreter)
        .args([
            "-c",
            "import sys, json; print(json.dumps([sys.version_info[0], sys.version_info[1], sys.path]))",
        ])
        .output()
        .map_err(|e| start_error(WORKER, udf, format!("cannot run `{}`: {e}", interpreter.display())))?;
    if !out.status.success() {
        return Err(start_error(
            WORKER,
            udf,
            format!(
                "`{}` failed: {}",
                interpreter.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    let (major, minor, path): (u8, u8, Vec<String>) =
        serde_json::from_slice(&out.stdout).map_err(|e| {
            start_error(
                WORKER,
                udf,
                format!("unexpected answer from `{}`: {e}", interpreter.display()),
            )
        })?;
    if (major, minor) != embedded {
        return Err(start_error(
            WORKER,
            udf,
            format!(
                "`{}` is Python {major}.{minor} but this host embeds Python {}.{}; use \
                 `runtime: python` (sidecar workers run any Python version) or a {}.{} environment",
                interpreter.display(),
                embedded.0,
                embedded.1,
                embedded.0,
                embedded.1
            ),
        ));
    }
    Ok(path)
}

impl InprocRuntime {
    /// Imports the UDF's module into the embedded interpreter.
    pub fn start(udf: &str, spec: &PythonSpec) -> Result<InprocRuntime, RuntimeError> {
        let interpreter = spec
            .interpreter
            .clone()
            .or_else(|| std::env::var_os("HEADWATER_PYTHON").map(PathBuf::from));
        Python::attach(|py| {
            let version = py.version_info();
            let mut search = vec![spec.path.display().to_string()];
            if let Some(interp) = &interpreter {
                search.extend(venv_sys_path(udf, interp, (version.major, version.minor))?);
            }
            let py_err = |e: PyErr| {
                let tb = e
                    .traceback(py)
                    .and_then(|t| t.format().ok())
                    .unwrap_or_default();
                start_error(WORKER, udf, format!("{tb}{e}"))
            };
            let sys = py.import("sys").map_err(py_err)?;
            let sys_path = sys.getattr("path").map_err(py_err)?;
            for p in search.iter().rev() {
                let present: bool = sys_path
                    .call_method1("__contains__", (p,))
                    .and_then(|b| b.extract())
                    .map_err(py_err)?;
                if !present {
                    sys_path.call_method1("insert", (0, p)).map_err(py_err)?;
                }
            }
            let inproc = py.import("headwater.inproc").map_err(|e| {
                start_error(
                    WORKER,
                    udf,
                    format!(
                        "cannot import the Headwater SDK in the embedded Python ({e}); \
                         `pip install ./sdk-python` in the environment named by `python:` or \
                         HEADWATER_PYTHON"
                    ),
                )
            })?;
            let loaded: Vec<(String, String)> = inproc
                .call_method1("load", (vec![spec.module.clone()], search.clone()))
                .and_then(|r| r.extract())
                .map_err(py_err)?;
            let functions = loaded
                .into_iter()
                .filter_map(|(name, kind)| {
                    let kind = match kind.as_str() {
                        "map" => FunctionKind::Map,
                        "filter" => FunctionKind::Filter,
                        "flat_map" => FunctionKind::FlatMap,
                        _ => return None, // keyed functions need the sidecar runtime
                    };
                    Some(FunctionInfo { name, kind })
                })
                .collect();
            let call_batch = inproc.getattr("call_batch").map_err(py_err)?.unbind();
            // SDKs older than code versions do not have the function: no version then.
            let code_version = inproc
                .call_method0("code_version")
                .and_then(|v| v.extract::<String>())
                .unwrap_or_default();
            Ok(InprocRuntime {
                udf: udf.to_string(),
                functions,
                call_batch,
                code_version,
            })
        })
    }
}

impl UdfRuntime for InprocRuntime {
    fn name(&self) -> &str {
        "python-inproc"
    }

    fn functions(&self) -> Vec<FunctionInfo> {
        self.functions.clone()
    }

    fn invoke(
        &self,
        function: &str,
        inputs: Vec<Value>,
    ) -> Result<Vec<RecordOutcome>, RuntimeError> {
        let encoded = inputs.iter().map(json_of).collect();
        self.call(function, encoded)
    }

    fn reads_source_text(&self) -> bool {
        true
    }

    fn code_version(&self) -> Option<String> {
        (!self.code_version.is_empty()).then(|| self.code_version.clone())
    }

    fn invoke_records(
        &self,
        function: &str,
        records: &[Record],
    ) -> Result<Vec<RecordOutcome>, RuntimeError> {
        // Records a source read are passed as its bytes: no copy of the value, no encoding.
        let encoded = records
            .iter()
            .map(|r| match r.source_text() {
                Some(text) => text.to_vec(),
                None => json_of(r.value()),
            })
            .collect();
        self.call(function, encoded)
    }
}

fn json_of(v: &Value) -> Vec<u8> {
    let mut b = Vec::with_capacity(128);
    v.write_json(&mut b);
    b
}

impl InprocRuntime {
    /// Calls `function` on records encoded as JSON, one outcome per record.
    fn call(
        &self,
        function: &str,
        encoded: Vec<Vec<u8>>,
    ) -> Result<Vec<RecordOutcome>, RuntimeError> {
        Python::attach(|py| {
            let fail = |e: PyErr| RuntimeError::WorkerFailed {
                worker: "in-process Python runtime".into(),
                udf: self.udf.clone(),
                attempts: 1,
                message: e.to_string(),
            };
            let values =
                PyList::new(py, encoded.iter().map(|b| PyBytes::new(py, b))).map_err(fail)?;
            let results = self
                .call_batch
                .bind(py)
                .call1((function, values))
                .map_err(fail)?;
            let results = results.cast::<PyList>().map_err(|e| fail(e.into()))?;
            let mut out = Vec::with_capacity(results.len());
            for item in results.iter() {
                let (code, payload, tb): (u8, Bound<'_, PyAny>, String) =
                    item.extract().map_err(fail)?;
                if code == 0 {
                    let outputs: Vec<Vec<u8>> = payload.extract().map_err(fail)?;
                    out.push(outputs_from_json(&outputs));
                } else {
                    let message: String = payload.extract().map_err(fail)?;
                    let mut e = FunctionError::permanent(message);
                    if code == 1 {
                        e.class = ErrorClass::Transient;
                    }
                    if !tb.is_empty() {
                        e.detail = Some(tb);
                    }
                    out.push(Err(e));
                }
            }
            Ok(out)
        })
    }
}
