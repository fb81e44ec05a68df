//! One instance of a guest module: loading and checking a module (imports, exports, ABI
//! version, the functions it describes), starting instances with a bounded memory, and one
//! guest call per batch with a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{
    Engine, ExternType, FuncType, InstancePre, Linker, Memory, Module, ResourceLimiter, Store,
    Trap, TypedFunc, WasmBacktrace,
};

use super::engine::{self, TICK};
use super::wasi::{self, ProcExit, SleptPastDeadline, WasiState};
use crate::udf::{FunctionInfo, FunctionKind};

/// The guest ABI version this host speaks (docs/wasm-abi.md).
pub const ABI_VERSION: i32 = 1;
/// The largest module file loaded.
pub const MAX_MODULE_BYTES: usize = 64 << 20;
/// The longest start-up (`_initialize`, `hw_describe`) may take.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the store of an instance holds.
pub struct HostState {
    pub wasi: WasiState,
    limiter: MemoryLimiter,
}

/// Bounds an instance's linear memory.
struct MemoryLimiter {
    limit: usize,
}

/// A guest asked for more memory than its limit: the call traps with this.
#[derive(Debug, thiserror::Error)]
#[error("the module needs more than its memory limit of {} (it asked for {})", mib(*limit), mib(*desired))]
pub struct MemoryLimitExceeded {
    pub limit: usize,
    pub desired: usize,
}

fn mib(bytes: usize) -> String {
    if bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit: self.limit,
                desired,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// How instances of a module are made.
#[derive(Clone, Debug)]
pub struct Limits {
    pub memory: usize,
    pub allow_clock: bool,
    pub allow_random: bool,
}

/// A checked, compiled module, ready to be instantiated.
pub struct Loaded {
    pub digest: String,
    pub functions: Vec<FunctionInfo>,
    /// What the guest says it was built with (`hw_describe`'s `sdk`).
    pub sdk: String,
    pre: InstancePre<HostState>,
    limits: Limits,
    udf: Arc<str>,
}

/// A failed guest call or start: the instance is not used again.
#[derive(Debug)]
pub enum Failure {
    /// The call ran past its deadline.
    Timeout(Duration),
    /// A trap, the memory limit, `proc_exit`, or a broken ABI contract.
    Trap { message: String, detail: String },
}

impl Failure {
    fn from_error(err: &wasmtime::Error, timeout: Duration) -> Failure {
        if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt))
            || err.downcast_ref::<SleptPastDeadline>().is_some()
        {
            return Failure::Timeout(timeout);
        }
        let message = if let Some(m) = err.downcast_ref::<MemoryLimitExceeded>() {
            m.to_string()
        } else if let Some(ProcExit(code)) = err.downcast_ref::<ProcExit>() {
            format!("the module exited (proc_exit({code}))")
        } else if let Some(trap) = err.downcast_ref::<Trap>() {
            format!("the module trapped: {trap}")
        } else {
            format!("the module failed: {}", err.root_cause())
        };
        let detail = err
            .downcast_ref::<WasmBacktrace>()
            .map(ToString::to_string)
            .unwrap_or_default();
        Failure::Trap { message, detail }
    }

    fn protocol(message: String) -> Failure {
        Failure::Trap {
            message,
            detail: String::new(),
        }
    }
}

fn signature(ty: &FuncType) -> String {
    let list = |it: &mut dyn Iterator<Item = wasmtime::ValType>| {
        it.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    };
    format!(
        "({}) -> ({})",
        list(&mut ty.params()),
        list(&mut ty.results())
    )
}

/// The exports every guest has, with their signatures.
const EXPORTS: [(&str, &str); 5] = [
    ("hw_abi_version", "() -> (i32)"),
    ("hw_alloc", "(i32) -> (i32)"),
    ("hw_free", "(i32, i32) -> ()"),
    ("hw_describe", "() -> (i64)"),
    ("hw_call", "(i32, i32, i32) -> (i64)"),
];

/// What the module imports from WASI; refuses any other import.
fn check_imports(module: &Module) -> Result<Vec<(String, FuncType)>, String> {
    let mut wasi_imports = Vec::new();
    let mut refused = Vec::new();
    for import in module.imports() {
        match import.ty() {
            ExternType::Func(ty)
                if import.module() == wasi::MODULE && wasi::is_wasi_function(import.name()) =>
            {
                wasi_imports.push((import.name().to_string(), ty));
            }
            other => {
                let what = match other {
                    ExternType::Func(_) => "function",
                    ExternType::Memory(_) => "memory",
                    ExternType::Table(_) => "table",
                    ExternType::Global(_) => "global",
                    _ => "item",
                };
                refused.push(format!("{what} `{}.{}`", import.module(), import.name()));
            }
        }
    }
    if !refused.is_empty() {
        return Err(format!(
            "the module imports {}, which this host does not provide: a guest may import only \
             WASI preview 1 functions (`{}`), and gets no files, network or environment \
             (docs/wasm-abi.md)",
            refused.join(", "),
            wasi::MODULE
        ));
    }
    Ok(wasi_imports)
}

fn check_exports(module: &Module) -> Result<(), String> {
    let mut problems = Vec::new();
    match module.get_export("memory") {
        Some(ExternType::Memory(m)) if !m.is_64() => {}
        Some(ExternType::Memory(_)) => {
            problems.push("its memory is 64-bit (memory64); build for wasm32".to_string())
        }
        _ => problems.push("it does not export its linear memory as `memory`".to_string()),
    }
    for (name, want) in EXPORTS {
        match module.get_export(name) {
            Some(ExternType::Func(ty)) if signature(&ty) == want => {}
            Some(ExternType::Func(ty)) => problems.push(format!(
                "`{name}` has the signature {}, the ABI says {want}",
                signature(&ty)
            )),
            _ => problems.push(format!("it does not export `{name}` {want}")),
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the module is not a Headwater Wasm UDF module: {}. Build it with the Headwater guest SDK \
         (Rust: headwater-wasm-guest, Go: sdk-go/wasm) or implement docs/wasm-abi.md",
        problems.join("; ")
    ))
}

/// The functions `hw_describe` lists.
#[derive(serde::Deserialize)]
struct Description {
    #[serde(default)]
    abi: Option<i32>,
    #[serde(default)]
    sdk: String,
    functions: Vec<Described>,
    /// A problem the module found in itself (a function registered twice, say).
    #[serde(default)]
    error: Option<String>,
}

#[derive(serde::Deserialize)]
struct Described {
    name: String,
    kind: String,
}

fn kind_from(name: &str) -> Option<FunctionKind> {
    Some(match name {
        "map" => FunctionKind::Map,
        "filter" => FunctionKind::Filter,
        "flat_map" => FunctionKind::FlatMap,
        "keyed_process" => FunctionKind::KeyedProcess,
        _ => return None,
    })
}

impl Loaded {
    /// Checks and compiles `bytes`, starts one instance and asks it for its functions.
    /// Returns the module and that first instance.
    pub fn load(
        udf: &Arc<str>,
        bytes: &[u8],
        limits: Limits,
    ) -> Result<(Loaded, Instance), String> {
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(format!(
                "the module is {}, more than the {} a Wasm UDF module may be",
                mib(bytes.len()),
                mib(MAX_MODULE_BYTES)
            ));
        }
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {}
            Some([0, b'a', b's', b'm', _, _, 1, 0]) => {
                return Err(
                    "the file is a WebAssembly component, not a core module: build for \
                     wasm32-wasip1 (Rust) or GOOS=wasip1 GOARCH=wasm (Go)"
                        .into(),
                )
            }
            Some([0, b'a', b's', b'm', ..]) => {
                return Err("the file is a WebAssembly module of an unsupported version".into())
            }
            _ => {
                let head: String = bytes
                    .iter()
                    .take(8)
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                return Err(format!(
                    "the file is not a WebAssembly module (it starts with {head}, not 00 61 73 6d)"
                ));
            }
        }
        let engine = engine::engine()?;
        let digest = engine::sha256_hex(bytes);
        let module = engine::compile(engine, bytes, &digest)
            .map_err(|e| format!("the module does not compile: {e}"))?;
        let imports = check_imports(&module)?;
        check_exports(&module)?;
        let mut linker = Linker::new(engine);
        wasi::add_to_linker(&mut linker, &imports).map_err(|e| e.to_string())?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| format!("the module cannot be linked: {e:#}"))?;
        let mut loaded = Loaded {
            digest,
            functions: Vec::new(),
            sdk: String::new(),
            pre,
            limits,
            udf: udf.clone(),
        };
        let mut first = loaded.instantiate(engine).map_err(|f| match f {
            Failure::Timeout(t) => format!("the module did not start within {t:?}"),
            Failure::Trap { message, .. } => message,
        })?;
        let version = first
            .abi_version()
            .map_err(|e| format!("hw_abi_version failed: {e}"))?;
        if version != ABI_VERSION {
            return Err(format!(
                "the module speaks version {version} of the Headwater Wasm ABI, this host speaks \
                 version {ABI_VERSION}: rebuild it with the guest SDK that matches this host"
            ));
        }
        let text = first.describe()?;
        let description: Description = serde_json::from_slice(&text)
            .map_err(|e| format!("hw_describe returned an invalid description: {e}"))?;
        if let Some(problem) = description.error.filter(|e| !e.is_empty()) {
            return Err(format!("the module reports a problem: {problem}"));
        }
        if description.abi.is_some_and(|v| v != ABI_VERSION) {
            return Err(format!(
                "hw_describe says ABI version {:?} but hw_abi_version says {ABI_VERSION}",
                description.abi
            ));
        }
        for f in description.functions {
            match kind_from(&f.kind) {
                Some(kind) => loaded.functions.push(FunctionInfo { name: f.name, kind }),
                None => {
                    return Err(format!(
                        "function `{}` has kind `{}`, which the Wasm runtime does not run (map, \
                         filter, flat_map, keyed_process)",
                        f.name, f.kind
                    ))
                }
            }
        }
        loaded.sdk = description.sdk;
        Ok((loaded, first))
    }

    /// A fresh instance, `_initialize`d.
    pub fn instantiate(&self, engine: &Engine) -> Result<Instance, Failure> {
        let mut store = Store::new(
            engine,
            HostState {
                wasi: WasiState::new(
                    self.udf.clone(),
                    self.limits.allow_clock,
                    self.limits.allow_random,
                ),
                limiter: MemoryLimiter {
                    limit: self.limits.memory,
                },
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        set_deadline(&mut store, START_TIMEOUT);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| Failure::from_error(&e, START_TIMEOUT))?;
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ())
                .map_err(|e| Failure::from_error(&e, START_TIMEOUT))?;
        }
        let missing = |what: &str| Failure::protocol(format!("the module has no `{what}`"));
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| missing("memory"))?;
        let alloc = instance
            .get_typed_func(&mut store, "hw_alloc")
            .map_err(|_| missing("hw_alloc"))?;
        let free = instance
            .get_typed_func(&mut store, "hw_free")
            .map_err(|_| missing("hw_free"))?;
        let call = instance
            .get_typed_func(&mut store, "hw_call")
            .map_err(|_| missing("hw_call"))?;
        let describe = instance
            .get_typed_func(&mut store, "hw_describe")
            .map_err(|_| missing("hw_describe"))?;
        let abi_version = instance
            .get_typed_func(&mut store, "hw_abi_version")
            .map_err(|_| missing("hw_abi_version"))?;
        store.data_mut().wasi.flush();
        Ok(Instance {
            scratch: Vec::new(),
            store,
            memory,
            alloc,
            free,
            call,
            describe,
            abi_version,
        })
    }
}

fn set_deadline(store: &mut Store<HostState>, timeout: Duration) {
    let ticks = timeout.as_nanos().div_ceil(TICK.as_nanos()) as u64 + 1;
    store.set_epoch_deadline(ticks);
    store.data_mut().wasi.deadline = Some(Instant::now() + timeout);
}

/// One instance of a module and its exports.
pub struct Instance {
    /// The buffer batches for this instance are encoded into, kept between calls.
    pub scratch: Vec<u8>,
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    free: TypedFunc<(i32, i32), ()>,
    call: TypedFunc<(i32, i32, i32), i64>,
    describe: TypedFunc<(), i64>,
    abi_version: TypedFunc<(), i32>,
}

/// A packed `ptr << 32 | len` as a range of memory of `size` bytes.
fn unpack(packed: i64, size: usize, what: &str) -> Result<std::ops::Range<usize>, Failure> {
    let ptr = (packed as u64 >> 32) as usize;
    let len = (packed as u64 & 0xffff_ffff) as usize;
    if packed == 0 {
        return Err(Failure::protocol(format!("{what} returned no result (0)")));
    }
    if ptr + len > size {
        return Err(Failure::protocol(format!(
            "{what} returned bytes {ptr}..{} outside the module's memory ({size} bytes)",
            ptr + len
        )));
    }
    Ok(ptr..ptr + len)
}

impl Instance {
    fn abi_version(&mut self) -> wasmtime::Result<i32> {
        set_deadline(&mut self.store, START_TIMEOUT);
        self.abi_version.call(&mut self.store, ())
    }

    /// `hw_describe`'s JSON.
    fn describe(&mut self) -> Result<Vec<u8>, String> {
        set_deadline(&mut self.store, START_TIMEOUT);
        let packed = self
            .describe
            .call(&mut self.store, ())
            .map_err(|e| format!("hw_describe failed: {e:#}"))?;
        let size = self.memory.data_size(&self.store);
        let range = unpack(packed, size, "hw_describe").map_err(|f| match f {
            Failure::Trap { message, .. } => message,
            Failure::Timeout(_) => "hw_describe timed out".into(),
        })?;
        let text = self.memory.data(&self.store)[range.clone()].to_vec();
        self.free
            .call(&mut self.store, (range.start as i32, range.len() as i32))
            .map_err(|e| format!("hw_free failed: {e:#}"))?;
        Ok(text)
    }

    /// Calls function `index` once on `batch` and decodes its results in place with `decode`
    /// before the guest frees them. Output the guest wrote during the call is logged, and its
    /// last part is returned with a failure (`Err`) for the error message.
    pub fn call<R>(
        &mut self,
        index: u32,
        batch: &[u8],
        timeout: Duration,
        decode: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, (Failure, String)> {
        let result = self.call_inner(index, batch, timeout, decode);
        let wasi = &mut self.store.data_mut().wasi;
        wasi.flush();
        let tail = wasi.take_tail();
        wasi.deadline = None;
        result.map_err(|f| (f, tail))
    }

    fn call_inner<R>(
        &mut self,
        index: u32,
        batch: &[u8],
        timeout: Duration,
        decode: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, Failure> {
        let fail = |e: wasmtime::Error| Failure::from_error(&e, timeout);
        let len = i32::try_from(batch.len())
            .map_err(|_| Failure::protocol("the batch is larger than 2 GiB".into()))?;
        set_deadline(&mut self.store, timeout);
        let ptr = self.alloc.call(&mut self.store, len).map_err(fail)?;
        let start = u32::try_from(ptr).unwrap_or(0) as usize;
        let slot = self
            .memory
            .data_mut(&mut self.store)
            .get_mut(start..start + batch.len())
            .filter(|_| ptr != 0)
            .ok_or_else(|| {
                Failure::protocol(format!(
                    "hw_alloc({len}) returned {ptr}, not a block of the module's memory"
                ))
            })?;
        slot.copy_from_slice(batch);
        let packed = self
            .call
            .call(&mut self.store, (index as i32, ptr, len))
            .map_err(fail)?;
        let size = self.memory.data_size(&self.store);
        let range = unpack(packed, size, "hw_call")?;
        let decoded = decode(&self.memory.data(&self.store)[range.clone()]);
        self.free
            .call(&mut self.store, (range.start as i32, range.len() as i32))
            .map_err(fail)?;
        Ok(decoded)
    }
}
