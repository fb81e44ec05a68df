//! The Python runtime: functions served by `python -m headwater.worker` sidecar processes
//! (the `headwater` pip SDK), run and supervised by the generic worker runtime
//! ([`super::worker`]). This module only says how to start a Python worker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::worker::{Launcher, WorkerRuntime};
use super::RuntimeError;
use crate::config::spec::PythonSpec;

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
