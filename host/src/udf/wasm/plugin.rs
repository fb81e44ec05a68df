//! `runtime: wasm` as a plug-in: the options of a Wasm UDF (its module and its sandbox's
//! limits and grants) and how it starts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::versions::WasmUdf;
use super::WasmRuntime;
use crate::config::spec::{UdfRuntimeSpec, UdfSpec};
use crate::config::OptionsReader;
use crate::udf::registry::{function_kind, options, RuntimePlugin, StartContext};
use crate::udf::{FunctionInfo, FunctionKind, RuntimeError, UdfRuntime};

/// `runtime: wasm`.
pub struct Wasm;

impl RuntimePlugin for Wasm {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn summary(&self) -> &'static str {
        "WebAssembly modules run sandboxed inside the host (module, memory, timeout, allow)"
    }

    fn read_options(&self, r: &mut OptionsReader<'_, '_>) -> Option<UdfRuntimeSpec> {
        WasmSpec::read(r).map(|spec| UdfRuntimeSpec::new(self.name(), spec))
    }

    fn runs(&self, kind: FunctionKind) -> bool {
        kind != FunctionKind::WindowAggregate
    }

    /// Starts the module and registers it among the UDFs whose module can be replaced while
    /// the pipeline runs.
    fn start(
        &self,
        udf: &UdfSpec,
        ctx: &mut StartContext,
    ) -> Result<Arc<dyn UdfRuntime>, RuntimeError> {
        let spec: &WasmSpec = options(udf)?;
        let runtime = Arc::new(WasmRuntime::start(&udf.name, spec)?);
        ctx.wasm_udfs.insert(
            udf.name.clone(),
            WasmUdf {
                runtime: runtime.clone(),
                uses: vec![FunctionInfo {
                    name: udf.function.clone(),
                    kind: function_kind(udf.kind),
                }],
                module: spec.module.clone(),
            },
        );
        Ok(runtime)
    }
}

/// How to run the Wasm module of one UDF.
#[derive(Clone, Debug, PartialEq)]
pub struct WasmSpec {
    /// The module file (`.wasm`), built with a Headwater guest SDK (docs/wasm-abi.md).
    pub module: PathBuf,
    /// Most bytes of linear memory one instance may have (default 64 MiB).
    pub memory: usize,
    /// Longest one guest call (a batch) may take before it is interrupted (default 5s).
    pub timeout: Duration,
    /// The real clocks instead of a deterministic one (`allow: [clock]`).
    pub allow_clock: bool,
    /// The system's random source instead of a deterministic one (`allow: [random]`).
    pub allow_random: bool,
}

impl WasmSpec {
    /// Reads `module`, `memory`, `timeout` and `allow`.
    pub fn read(r: &mut OptionsReader<'_, '_>) -> Option<WasmSpec> {
        let module = r
            .required_string(
                "module",
                "name the compiled module, e.g. `module: ./target/wasm32-wasip1/release/my_udfs.wasm`",
            )
            .map(|p| r.resolve(&p));
        let memory = r
            .byte_size("memory")
            .and_then(|size| {
                if size < 1 << 20 {
                    let ctx = r.context().to_string();
                    r.error_at(
                        "memory",
                        format!("{ctx}: memory must be at least 1MiB"),
                        Some("e.g. `memory: 64MiB`".into()),
                    );
                    return None;
                }
                Some(size)
            })
            .unwrap_or(64 << 20);
        let timeout = r
            .positive_duration("timeout")
            .unwrap_or(Duration::from_secs(5));
        let (mut allow_clock, mut allow_random) = (false, false);
        for grant in r.choices("allow", &["clock", "random"]) {
            match grant {
                "clock" => allow_clock = true,
                _ => allow_random = true,
            }
        }
        Some(WasmSpec {
            module: module?,
            memory,
            timeout,
            allow_clock,
            allow_random,
        })
    }
}
