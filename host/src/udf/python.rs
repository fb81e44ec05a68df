//! The Python runtime: functions served by `python -m headwater.worker` sidecar processes
//! (the `headwater` pip SDK), run and supervised by the generic worker runtime
//! ([`super::worker`]). This module only says how to start a Python worker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::registry::{options, CallBatching, RuntimePlugin, StartContext};
use super::worker::{self, Launcher, SidecarSpec, WorkerOptions, WorkerRuntime};
use super::{FunctionKind, RuntimeError, UdfRuntime};
use crate::config::spec::{UdfRuntimeSpec, UdfSpec};
use crate::config::OptionsReader;

/// `runtime: python`.
pub struct Python;

impl RuntimePlugin for Python {
    fn name(&self) -> &'static str {
        "python"
    }

    fn summary(&self) -> &'static str {
        "Python functions in `python -m headwater.worker` processes (module, python, path, \
         workers, batch_size, linger, timeout, endpoint)"
    }

    fn read_options(&self, r: &mut OptionsReader<'_, '_>) -> Option<UdfRuntimeSpec> {
        PythonSpec::read(r).map(|spec| UdfRuntimeSpec::new(self.name(), spec))
    }

    fn runs(&self, _kind: FunctionKind) -> bool {
        true
    }

    fn batching(&self, udf: &UdfSpec) -> CallBatching {
        worker::batching::<PythonSpec>(udf)
    }

    fn start(
        &self,
        udf: &UdfSpec,
        _ctx: &mut StartContext,
    ) -> Result<Arc<dyn UdfRuntime>, RuntimeError> {
        Ok(Arc::new(start(&udf.name, options(udf)?)?))
    }
}

/// How to run the Python functions of one UDF (`runtime: python` and `python-inproc`).
#[derive(Clone, Debug, PartialEq)]
pub struct PythonSpec {
    /// The module that defines the function (imported by the worker).
    pub module: String,
    /// The interpreter (a virtual environment's `bin/python`); default: `$HEADWATER_PYTHON`,
    /// else `python3`.
    pub interpreter: Option<PathBuf>,
    /// Folder the module is imported from (default: the pipeline file's folder).
    pub path: PathBuf,
    pub sidecar: SidecarSpec,
}

impl WorkerOptions for PythonSpec {
    fn sidecar(&self) -> &SidecarSpec {
        &self.sidecar
    }
}

impl PythonSpec {
    /// Reads `module`, `python`, `path` and the worker options.
    pub fn read(r: &mut OptionsReader<'_, '_>) -> Option<PythonSpec> {
        let module = r.required_string(
            "module",
            "name the Python module defining the function, e.g. `module: my_udfs`",
        );
        let interpreter = r.string("python").map(|p| {
            if p.contains('/') {
                r.resolve(&p)
            } else {
                PathBuf::from(p)
            }
        });
        let path = r
            .string("path")
            .map(|p| r.resolve(&p))
            .unwrap_or_else(|| r.base().to_path_buf());
        let sidecar = SidecarSpec::read(r);
        Some(PythonSpec {
            module: module?,
            interpreter,
            path,
            sidecar,
        })
    }
}

/// Starts `python -m headwater.worker --module M --socket S --path P`.
pub struct PythonLauncher {
    interpreter: PathBuf,
    module: String,
    path: PathBuf,
}

impl PythonLauncher {
    pub fn new(spec: &PythonSpec) -> Self {
        PythonLauncher {
            interpreter: interpreter(spec),
            module: spec.module.clone(),
            path: spec.path.clone(),
        }
    }
}

/// The udf's `python:`, else `$HEADWATER_PYTHON`, else `python3`.
pub fn interpreter(spec: &PythonSpec) -> PathBuf {
    spec.interpreter
        .clone()
        .or_else(|| std::env::var_os("HEADWATER_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"))
}

impl Launcher for PythonLauncher {
    fn runtime(&self) -> &'static str {
        "python"
    }

    fn noun(&self) -> &'static str {
        "Python worker"
    }

    fn command(&self, socket: &Path) -> Command {
        let mut c = Command::new(&self.interpreter);
        c.args([
            "-m",
            "headwater.worker",
            "--module",
            &self.module,
            "--socket",
        ])
        .arg(socket)
        .arg("--path")
        .arg(&self.path);
        c
    }

    fn spawn_hint(&self) -> String {
        "set `python:` in the udf, or HEADWATER_PYTHON, to an interpreter where \
         `pip install ./sdk-python` was run"
            .into()
    }

    fn exit_hint(&self, stderr: &str) -> Option<String> {
        stderr.contains("No module named 'headwater'").then(|| {
            "the interpreter lacks the Headwater SDK: `pip install ./sdk-python` into it, \
             or point the udf's `python:` (or HEADWATER_PYTHON) at an environment that has it"
                .into()
        })
    }

    fn upgrade_hint(&self) -> String {
        "install the SDK that matches this host (`pip install ./sdk-python`)".into()
    }
}

/// Starts the Python workers of `udf`.
pub fn start(udf: &str, spec: &PythonSpec) -> Result<WorkerRuntime, RuntimeError> {
    WorkerRuntime::start(udf, &spec.sidecar, Arc::new(PythonLauncher::new(spec)))
}
