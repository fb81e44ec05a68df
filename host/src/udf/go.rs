//! The Go runtime: functions served by a worker program built with the Go SDK (`sdk-go`), run
//! and supervised by the generic worker runtime ([`super::worker`]). The pipeline names a built
//! worker (`binary:`) or a Go `main` package (`package:`) that the host builds with `go build`
//! into a cache, keyed by the content of the package's module, so a change to any of its Go
//! files, `go.mod` or `go.sum` rebuilds it and an unchanged one starts at once.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::registry::{options, CallBatching, RuntimePlugin, StartContext};
use super::worker::{self, Launcher, SidecarSpec, WorkerOptions, WorkerRuntime};
use super::{start_error, FunctionKind, RuntimeError, UdfRuntime};
use crate::config::spec::{UdfRuntimeSpec, UdfSpec};
use crate::config::OptionsReader;

/// How start-up errors name this runtime.
const WORKER: &str = "Go worker";

/// `runtime: go`.
pub struct Go;

impl RuntimePlugin for Go {
    fn name(&self) -> &'static str {
        "go"
    }

    fn summary(&self) -> &'static str {
        "Go functions in worker processes built with the Go SDK (package or binary, workers, \
         batch_size, linger, timeout, endpoint)"
    }

    fn read_options(&self, r: &mut OptionsReader<'_, '_>) -> Option<UdfRuntimeSpec> {
        GoSpec::read(r).map(|spec| UdfRuntimeSpec::new(self.name(), spec))
    }

    fn runs(&self, _kind: FunctionKind) -> bool {
        true
    }

    fn batching(&self, udf: &UdfSpec) -> CallBatching {
        worker::batching::<GoSpec>(udf)
    }

    fn start(
        &self,
        udf: &UdfSpec,
        _ctx: &mut StartContext,
    ) -> Result<Arc<dyn UdfRuntime>, RuntimeError> {
        Ok(Arc::new(start(&udf.name, options(udf)?)?))
    }
}

/// How to run the Go workers of one UDF.
#[derive(Clone, Debug, PartialEq)]
pub struct GoSpec {
    /// The worker program (absent when `sidecar.endpoint` names a running worker).
    pub program: Option<GoProgram>,
    pub sidecar: SidecarSpec,
}

/// A Go worker program: built already, or built by the host.
#[derive(Clone, Debug, PartialEq)]
pub enum GoProgram {
    /// An executable built with the Go SDK (`go build -o bin/worker ./udfs`).
    Binary(PathBuf),
    /// A Go `main` package folder the host builds with `go build` into a cache, again when its
    /// sources change.
    Package(PathBuf),
}

impl WorkerOptions for GoSpec {
    fn sidecar(&self) -> &SidecarSpec {
        &self.sidecar
    }
}

impl GoSpec {
    /// Exactly one of `binary`, `package` or `endpoint`, and the worker options.
    pub fn read(r: &mut OptionsReader<'_, '_>) -> Option<GoSpec> {
        let ctx = r.context().to_string();
        let (binary, package) = (r.has("binary"), r.has("package"));
        let program = match (binary, package) {
            (true, false) => r.string("binary").map(|p| GoProgram::Binary(r.resolve(&p))),
            (false, true) => r
                .string("package")
                .map(|p| GoProgram::Package(r.resolve(&p))),
            (true, true) => {
                r.error_at(
                    "package",
                    format!("{ctx}: give `binary` or `package`, not both"),
                    Some("`binary: bin/worker` runs a built worker; `package: ./udfs` has the host build it".into()),
                );
                None
            }
            (false, false) => None,
        };
        let sidecar = SidecarSpec::read(r);
        match (&program, sidecar.endpoint.is_some()) {
            (None, false) if !binary && !package => {
                r.error(
                    format!("{ctx}: a Go UDF needs `package` (a Go main package the host builds), `binary` (a built worker) or `endpoint` (a running worker)"),
                    Some("e.g. `package: ./udfs` next to the pipeline file".into()),
                );
                return None;
            }
            (Some(_), true) => {
                r.error(
                    format!("{ctx}: `endpoint` connects to a running worker; give it or `binary`/`package`, not both"),
                    None,
                );
                return None;
            }
            (None, false) => return None,
            _ => {}
        }
        Some(GoSpec { program, sidecar })
    }
}

/// Starts `BINARY --socket S`.
pub struct GoLauncher {
    binary: PathBuf,
}

impl Launcher for GoLauncher {
    fn runtime(&self) -> &'static str {
        "go"
    }

    fn noun(&self) -> &'static str {
        "Go worker"
    }

    fn command(&self, socket: &Path) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--socket").arg(socket);
        c
    }

    fn spawn_hint(&self) -> String {
        "`binary:` must name an executable built from a Go main package that calls \
         headwater.Main(...) (sdk-go/README.md)"
            .into()
    }

    fn exit_hint(&self, stderr: &str) -> Option<String> {
        stderr.contains("flag provided but not defined").then(|| {
            "the program does not look like a Headwater Go worker: its main must call \
             headwater.Main(...) (sdk-go/README.md)"
                .into()
        })
    }

    fn upgrade_hint(&self) -> String {
        "rebuild the worker with the Go SDK that matches this host (sdk-go)".into()
    }
}

/// Starts the Go workers of `udf`, building its package first if the pipeline names one.
pub fn start(udf: &str, spec: &GoSpec) -> Result<WorkerRuntime, RuntimeError> {
    let binary = match &spec.program {
        Some(GoProgram::Binary(path)) => {
            if !path.is_file() {
                return Err(start_error(
                    WORKER,
                    udf,
                    format!(
                        "`binary: {}` does not exist; build it with `go build -o {} ./your/package`, or name the package with `package:` and the host builds it",
                        path.display(),
                        path.display()
                    ),
                ));
            }
            path.clone()
        }
        Some(GoProgram::Package(dir)) => build_package(udf, dir)?,
        // Connects to `endpoint`; never started.
        None => PathBuf::from("headwater-go-worker"),
    };
    WorkerRuntime::start(udf, &spec.sidecar, Arc::new(GoLauncher { binary }))
}

/// The `go` command: `$HEADWATER_GO`, else `go` on the PATH.
fn go_command() -> PathBuf {
    std::env::var_os("HEADWATER_GO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("go"))
}

/// Where built workers are kept: `$HEADWATER_CACHE` or `~/.cache/headwater`, `go-workers/`.
fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("HEADWATER_CACHE") {
        return PathBuf::from(dir).join("go-workers");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("headwater").join("go-workers")
}

/// Builds the Go main package in `dir` (once per content of its module) and returns the
/// binary.
fn build_package(udf: &str, dir: &Path) -> Result<PathBuf, RuntimeError> {
    if !dir.is_dir() {
        return Err(start_error(
            WORKER,
            udf,
            format!(
                "`package: {}` is not a folder; name the folder of a Go main package that calls headwater.Main(...)",
                dir.display()
            ),
        ));
    }
    let module = module_root(dir).ok_or_else(|| {
        start_error(
            WORKER,
            udf,
            format!(
                "`package: {}` is not inside a Go module (no go.mod above it); run `go mod init` there",
                dir.display()
            ),
        )
    })?;
    let digest = module_digest(&module, dir).map_err(|e| {
        start_error(
            WORKER,
            udf,
            format!("cannot read {}: {e}", module.display()),
        )
    })?;
    let out_dir = cache_root().join(&digest);
    let binary = out_dir.join("worker");
    if binary.is_file() {
        tracing::debug!(udf, binary = %binary.display(), "Go worker already built");
        return Ok(binary);
    }
    std::fs::create_dir_all(&out_dir).map_err(|e| {
        start_error(
            WORKER,
            udf,
            format!("cannot create {}: {e}", out_dir.display()),
        )
    })?;
    let partial = out_dir.join(format!("worker.{}.partial", std::process::id()));
    let go = go_command();
    tracing::info!(udf, package = %dir.display(), "building the Go worker");
    let output = Command::new(&go)
        .arg("build")
        // No VCS stamping: a checkout owned by another user ("dubious ownership") or without
        // git would fail the build, and the binary does not need it.
        .arg("-buildvcs=false")
        .arg("-o")
        .arg(&partial)
        .arg(".")
        .current_dir(dir)
        .output()
        .map_err(|e| {
            start_error(
                WORKER,
                udf,
                format!(
                    "cannot run `{}` to build `package: {}`: {e}; install Go (1.24 or newer) or set HEADWATER_GO, or build the worker yourself and name it with `binary:`",
                    go.display(),
                    dir.display()
                ),
            )
        })?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&partial);
        let text = String::from_utf8_lossy(&output.stderr);
        return Err(start_error(
            WORKER,
            udf,
            format!(
                "`go build` of {} failed:\n{}",
                dir.display(),
                text.trim_end()
            ),
        ));
    }
    std::fs::rename(&partial, &binary).map_err(|e| {
        start_error(
            WORKER,
            udf,
            format!("cannot place {}: {e}", binary.display()),
        )
    })?;
    Ok(binary)
}

/// The folder holding the `go.mod` of the module `dir` belongs to.
fn module_root(dir: &Path) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(dir).ok()?;
    dir.ancestors()
        .find(|d| d.join("go.mod").is_file())
        .map(Path::to_path_buf)
}

/// A digest of what a build of `package` in `module` depends on: the package's path and every
/// `.go`, `go.mod`, `go.sum` and `go.work` file of the module (not entering `vendor/` or hidden
/// folders, which `go build` ignores too), and the Go command in use.
fn module_digest(module: &Path, package: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    collect_go_files(module, &mut files)?;
    files.sort();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(package.to_string_lossy().as_bytes());
    h.update(go_command().to_string_lossy().as_bytes());
    let mut buf = Vec::new();
    for f in files {
        h.update(f.to_string_lossy().as_bytes());
        buf.clear();
        std::fs::File::open(&f)?.read_to_end(&mut buf)?;
        h.update(&(buf.len() as u64).to_le_bytes());
        h.update(&buf);
    }
    Ok(format!("{:032x}", h.digest128()))
}

fn collect_go_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            // `go build` ignores these folders, and nested modules are not part of this one.
            let skipped = name.starts_with('.')
                || name.starts_with('_')
                || name == "vendor"
                || name == "testdata"
                || path.join("go.mod").is_file();
            if !skipped {
                collect_go_files(&path, out)?;
            }
        } else if name.ends_with(".go") || name == "go.mod" || name == "go.sum" || name == "go.work"
        {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_digest_follows_go_sources_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = dir.path();
        std::fs::write(m.join("go.mod"), "module example.com/u\n\ngo 1.24\n").expect("go.mod");
        std::fs::create_dir_all(m.join("cmd/w")).expect("mkdir");
        std::fs::write(m.join("cmd/w/main.go"), "package main\nfunc main() {}\n").expect("main");
        let pkg = m.join("cmd/w");
        assert_eq!(
            module_root(&pkg).as_deref(),
            std::fs::canonicalize(m).ok().as_deref()
        );
        let before = module_digest(m, &pkg).expect("digest");
        std::fs::write(m.join("README.md"), "docs do not rebuild").expect("readme");
        std::fs::create_dir_all(m.join("testdata")).expect("mkdir");
        std::fs::write(m.join("testdata/x.go"), "package x").expect("testdata");
        assert_eq!(module_digest(m, &pkg).expect("digest"), before);
        std::fs::write(m.join("cmd/w/main.go"), "package main\nfunc main() { }\n").expect("edit");
        assert_ne!(
            module_digest(m, &pkg).expect("digest"),
            before,
            "an edit rebuilds"
        );
    }

    #[test]
    fn a_folder_outside_any_module_is_named_with_a_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = build_package("u", dir.path()).expect_err("no module");
        let text = err.to_string();
        assert!(
            text.contains("not inside a Go module") && text.contains("go mod init"),
            "{text}"
        );
    }
}
