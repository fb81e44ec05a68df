//! The UDF runtimes as plug-ins: [`RuntimePlugin`] is everything the rest of the host needs to
//! know about one runtime — its name in pipeline files, its own options, its batching, how to
//! start it and its one-line description — and [`runtimes`] lists them. The configuration
//! (`config::load`) and the planner (`runtime/plan.rs`) only go through this list, so a new
//! runtime is one module implementing the trait plus one line in [`BUILTIN`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::wasm::versions::WasmUdfs;
use super::{FunctionKind, RuntimeError, UdfRuntime};
use crate::config::spec::{UdfKind, UdfRuntimeSpec, UdfSpec};
use crate::config::{OptionsReader, RuntimeCatalog};

/// One UDF runtime, as it plugs into the host.
pub trait RuntimePlugin: Send + Sync {
    /// Its name as written in pipeline files (`runtime: python`).
    fn name(&self) -> &'static str;

    /// One line for help texts: what runs the functions and which options it takes.
    fn summary(&self) -> &'static str;

    /// Reads this runtime's options from a UDF's entry in `udfs` (the keys other than
    /// `runtime`, `function` and `kind`); `None` when they are invalid, each problem reported
    /// through `options`. Keys it does not read are refused as unknown.
    fn read_options(&self, options: &mut OptionsReader<'_, '_>) -> Option<UdfRuntimeSpec>;

    /// Whether it runs functions of this kind (messages name the runtimes that do).
    fn runs(&self, kind: FunctionKind) -> bool {
        matches!(
            kind,
            FunctionKind::Map | FunctionKind::Filter | FunctionKind::FlatMap
        )
    }

    /// How a UDF step gathers a task's records into calls.
    fn batching(&self, _udf: &UdfSpec) -> CallBatching {
        CallBatching::default()
    }

    /// Starts the runtime of one declared UDF (`udf.runtime` holds the options
    /// [`RuntimePlugin::read_options`] returned).
    fn start(
        &self,
        udf: &UdfSpec,
        ctx: &mut StartContext,
    ) -> Result<Arc<dyn UdfRuntime>, RuntimeError>;
}

/// Every runtime this host runs, in the order messages list them.
pub static BUILTIN: [&dyn RuntimePlugin; 5] = [
    &super::native::Native,
    &super::python::Python,
    &super::inproc::PythonInproc,
    &super::go::Go,
    &super::wasm::Wasm,
];

/// The UDF runtimes a pipeline may name.
pub struct Registry {
    plugins: &'static [&'static dyn RuntimePlugin],
}

static RUNTIMES: Registry = Registry { plugins: &BUILTIN };

/// The runtimes of this host (pass it to `config::load`).
pub fn runtimes() -> &'static Registry {
    &RUNTIMES
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<&'static dyn RuntimePlugin> {
        self.plugins.iter().copied().find(|p| p.name() == name)
    }

    pub fn plugins(&self) -> &'static [&'static dyn RuntimePlugin] {
        self.plugins
    }

    fn plugin(&self, udf: &UdfSpec) -> Result<&'static dyn RuntimePlugin, RuntimeError> {
        self.get(udf.runtime.name())
            .ok_or_else(|| RuntimeError::UnknownRuntime {
                udf: udf.name.clone(),
                runtime: udf.runtime.name().to_string(),
                available: self.names().join(", "),
            })
    }

    /// Starts the runtime a declared UDF names.
    pub fn start(
        &self,
        udf: &UdfSpec,
        ctx: &mut StartContext,
    ) -> Result<Arc<dyn UdfRuntime>, RuntimeError> {
        self.plugin(udf)?.start(udf, ctx)
    }

    /// How a UDF step of `udf` gathers records into calls.
    pub fn batching(&self, udf: &UdfSpec) -> CallBatching {
        self.plugin(udf)
            .map(|p| p.batching(udf))
            .unwrap_or_default()
    }

    /// The names of the runtimes that run functions of `kind`.
    pub fn running(&self, kind: FunctionKind) -> Vec<&'static str> {
        self.plugins
            .iter()
            .filter(|p| p.runs(kind))
            .map(|p| p.name())
            .collect()
    }

    /// One line per runtime: its name and summary.
    pub fn help(&self) -> String {
        let width = self
            .plugins
            .iter()
            .map(|p| p.name().len())
            .max()
            .unwrap_or(0);
        self.plugins
            .iter()
            .map(|p| format!("  {:width$}  {}\n", p.name(), p.summary()))
            .collect()
    }
}

impl RuntimeCatalog for Registry {
    fn names(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|p| p.name()).collect()
    }

    fn read_options(
        &self,
        name: &str,
        options: &mut OptionsReader<'_, '_>,
    ) -> Option<UdfRuntimeSpec> {
        self.get(name)?.read_options(options)
    }
}

/// What starting the UDFs of one pipeline shares.
#[derive(Default)]
pub struct StartContext {
    shared: HashMap<&'static str, Arc<dyn UdfRuntime>>,
    /// The Wasm UDFs, whose modules can be replaced while the pipeline runs.
    pub wasm_udfs: WasmUdfs,
}

impl StartContext {
    /// One instance for all the UDFs of a runtime that needs only one (made by `make` at the
    /// first call).
    pub fn shared(
        &mut self,
        runtime: &'static str,
        make: impl FnOnce() -> Arc<dyn UdfRuntime>,
    ) -> Arc<dyn UdfRuntime> {
        self.shared.entry(runtime).or_insert_with(make).clone()
    }
}

/// How a UDF step gathers a task's records into calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallBatching {
    /// Call as soon as this many records are waiting.
    pub max_records: usize,
    /// Longest a record waits for others to fill a call (zero: once per incoming batch).
    pub linger: Duration,
}

impl Default for CallBatching {
    fn default() -> Self {
        CallBatching {
            max_records: 512,
            linger: Duration::ZERO,
        }
    }
}

/// The options of `udf`, which its runtime's plug-in read (an internal error otherwise).
pub fn options<T: crate::config::spec::RuntimeOptions>(udf: &UdfSpec) -> Result<&T, RuntimeError> {
    udf.runtime
        .options::<T>()
        .ok_or_else(|| RuntimeError::WrongOptions {
            udf: udf.name.clone(),
            runtime: udf.runtime.name().to_string(),
        })
}

/// The kind of function a declared UDF kind calls.
pub fn function_kind(kind: UdfKind) -> FunctionKind {
    match kind {
        UdfKind::Map => FunctionKind::Map,
        UdfKind::Filter => FunctionKind::Filter,
        UdfKind::FlatMap => FunctionKind::FlatMap,
        UdfKind::KeyedProcess => FunctionKind::KeyedProcess,
        UdfKind::WindowAggregate => FunctionKind::WindowAggregate,
    }
}

#[cfg(test)]
mod tests;
