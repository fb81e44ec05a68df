//! The one Wasmtime engine of the process, the clock that interrupts guests that run too long,
//! and compiled modules kept on disk so an unchanged module is compiled once per machine.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine, Module, OptLevel};

/// How often the epoch advances: the resolution of call deadlines.
pub const TICK: Duration = Duration::from_millis(10);

/// The first bytes of a cached compiled module, then its payload's SHA-256.
const CACHE_MAGIC: &[u8; 8] = b"HWCWASM1";

/// The process's engine, its epoch ticker started on first use.
pub fn engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.epoch_interruption(true);
            config.cranelift_opt_level(OptLevel::Speed);
            let engine =
                Engine::new(&config).map_err(|e| format!("cannot set up the Wasm engine: {e}"))?;
            let ticking = engine.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(TICK);
                    ticking.increment_epoch();
                })
                .map_err(|e| format!("cannot start the Wasm epoch thread: {e}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Where compiled modules are kept: `$HEADWATER_CACHE/wasm`, else `~/.cache/headwater/wasm`
/// (bounded in size: see [`super::cache_limit`]).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HEADWATER_CACHE") {
        return PathBuf::from(dir).join("wasm");
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("headwater")
        .join("wasm")
}

/// The cache file of a module: its digest and what makes compiled code usable by this engine
/// (Wasmtime's version and the engine's settings).
fn cache_path(engine: &Engine, digest: &str) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    cache_dir().join(format!("{digest}-{:016x}.cwasm", h.finish()))
}

/// Compiles `bytes` (whose SHA-256 is `digest`), or loads the result of an earlier compilation.
pub fn compile(engine: &Engine, bytes: &[u8], digest: &str) -> Result<Module, String> {
    let path = cache_path(engine, digest);
    if let Some(module) = load_cached(engine, &path) {
        tracing::debug!(path = %path.display(), "compiled Wasm module loaded from the cache");
        super::cache_limit::touch(&path);
        return Ok(module);
    }
    let started = std::time::Instant::now();
    let module = Module::new(engine, bytes).map_err(|e| format!("{e:#}"))?;
    tracing::info!(
        took = ?started.elapsed(),
        bytes = bytes.len(),
        "compiled the Wasm module"
    );
    match store_cached(&module, &path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                super::cache_limit::trim(dir, super::cache_limit::max_bytes(), &path);
            }
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled Wasm module")
        }
    }
    Ok(module)
}

fn load_cached(engine: &Engine, path: &Path) -> Option<Module> {
    let file = std::fs::read(path).ok()?;
    let payload = file.strip_prefix(CACHE_MAGIC.as_slice())?;
    let (digest, payload) = payload.split_at_checked(32)?;
    let actual = ring::digest::digest(&ring::digest::SHA256, payload);
    if actual.as_ref() != digest {
        tracing::warn!(path = %path.display(), "corrupt compiled Wasm module in the cache; compiling again");
        return None;
    }
    deserialize(engine, payload)
        .map_err(|e| {
            tracing::warn!(path = %path.display(), error = %e, "cannot load the cached Wasm module; compiling again");
        })
        .ok()
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, payload: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: `Module::deserialize` trusts its input to be Wasmtime's own compiled code. These
    // bytes are: `store_cached` wrote them from `Module::serialize` under a name that includes
    // this engine's compatibility hash, and `load_cached` checked them against the SHA-256
    // written in front of them, so a torn or corrupted file is recompiled instead. (Whoever can
    // write the cache folder can also replace the host binary; that is not a boundary.) Wasmtime
    // also checks the payload's own header against this engine and refuses a mismatch.
    unsafe { Module::deserialize(engine, payload) }
}

fn store_cached(module: &Module, path: &Path) -> Result<(), String> {
    let payload = module.serialize().map_err(|e| e.to_string())?;
    let dir = path.parent().ok_or("no cache folder")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let partial = path.with_extension(format!("{}.partial", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&partial)?;
        f.write_all(CACHE_MAGIC)?;
        f.write_all(ring::digest::digest(&ring::digest::SHA256, &payload).as_ref())?;
        f.write_all(&payload)?;
        f.sync_all()?;
        std::fs::rename(&partial, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        format!("cannot write {}: {e}", path.display())
    })
}
