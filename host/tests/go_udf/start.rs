//! Go UDFs refused or found at start (part of the `go_udf` test target): a missing function
//! or a kind mismatch, a package the compiler rejects, a missing `go` command, and the other
//! ways to name a worker (a built binary, a running endpoint).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{cache, go, headwater, output_ns, run_ok, udf, write_case, PACKAGE, SDK};

/// `headwater validate` of `dir`'s pipeline: it must be refused (exit 2); returns stderr.
fn refused(dir: &Path) -> String {
    let out = headwater(dir)
        .args(["validate", "pipeline.yaml"])
        .output()
        .expect("validate");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

#[test]
fn a_missing_function_and_a_kind_mismatch_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        10,
        "  - udf: missing\n",
        &udf("missing", "enrichh", ""),
    );
    let stderr = refused(dir.path());
    assert!(
        stderr.contains("unknown function `enrichh` in the go runtime; available: enrich, even, twice, explode, slow, sleepy, hang_once, bucket_totals, spread"),
        "{stderr}"
    );

    write_case(
        dir.path(),
        10,
        "  - udf: wrong\n",
        &udf("wrong", "enrich", ", kind: flat_map"),
    );
    let stderr = refused(dir.path());
    assert!(
        stderr.contains(
            "function `enrich` is a Map function but the pipeline declares it as FlatMap"
        ),
        "{stderr}"
    );
}

#[test]
fn a_package_that_does_not_compile_fails_the_start_with_the_compilers_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_module(
        dir.path(),
        "package main\n\nimport \"github.com/headwater-streaming/headwater/sdk-go/headwater\"\n\n\
func double(n int) (int, error) {\n\treturn n * \"2\", nil\n}\n\n\
func main() { headwater.Main(headwater.Map(\"double\", double)) }\n",
    );
    write_case(
        dir.path(),
        10,
        "  - udf: double\n",
        "  double: { runtime: go, package: ./udfs, function: double }\n",
    );
    let stderr = refused(dir.path());
    assert!(
        stderr.contains("udf `double`: the Go worker did not start: `go build` of ./udfs failed:"),
        "{stderr}"
    );
    // The compiler's own message, with the file and line of the mistake.
    assert!(stderr.contains("./main.go:6:"), "{stderr}");
    assert!(stderr.contains("\"2\""), "{stderr}");
    // Nothing is left in the cache for the failed build.
    let built = walk_files(cache());
    assert!(
        built.iter().all(|f| f.ends_with("worker")),
        "only finished workers in the cache: {built:?}"
    );
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_built_binary_and_a_running_endpoint_are_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = dir.path().join("bin/worker");
    let built = Command::new(go())
        .args(["build", "-buildvcs=false", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(PACKAGE)
        .output()
        .expect("go build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let expected: BTreeMap<i64, usize> =
        (0..300).filter(|n| n % 97 != 13).map(|n| (n, 1)).collect();

    // `binary:`, relative to the pipeline's folder.
    write_case(
        dir.path(),
        300,
        "  - udf: local\n",
        "  local: { runtime: go, binary: bin/worker, function: enrich, workers: 2 }\n",
    );
    run_ok(dir.path());
    assert_eq!(output_ns(dir.path()), expected);

    // `endpoint:`: a worker someone else started (no HEADWATER_HOST_PID: its parent, this
    // test, counts as its host), ready once it prints its readiness line.
    let socket = dir.path().join("remote.sock");
    let mut worker = Command::new(&binary)
        .arg("--socket")
        .arg(&socket)
        .env_remove("HEADWATER_HOST_PID")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker");
    let mut ready = String::new();
    std::io::BufReader::new(worker.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("readiness line");
    assert!(
        ready.starts_with(&format!(
            "headwater worker ready on unix:{}: enrich, ",
            socket.display()
        )),
        "{ready}"
    );
    write_case(
        dir.path(),
        300,
        "  - udf: remote\n",
        &format!(
            "  remote: {{ runtime: go, endpoint: 'unix:{}', function: enrich }}\n",
            socket.display()
        ),
    );
    let out = headwater(dir.path())
        .args(["run", "pipeline.yaml", "-q", "--fresh"])
        .output()
        .expect("run");
    let still_serving = worker.try_wait().expect("wait").is_none();
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        still_serving,
        "the host must not stop a worker it did not start"
    );
    assert_eq!(output_ns(dir.path()), expected);
}

/// A module of its own in `dir/udfs`, using the SDK like the test worker does, whose main.go
/// is `main_go`.
fn write_module(dir: &Path, main_go: &str) {
    let module = dir.join("udfs");
    std::fs::create_dir_all(&module).expect("mkdir");
    let go_mod = std::fs::read_to_string(Path::new(PACKAGE).join("go.mod")).expect("go.mod");
    let go_mod = go_mod
        .replace(
            "module github.com/headwater-streaming/headwater/host/tests/go-worker",
            "module example.com/udfs",
        )
        .replace("=> ../../../sdk-go", &format!("=> {SDK}"));
    std::fs::write(module.join("go.mod"), go_mod).expect("go.mod");
    std::fs::copy(Path::new(PACKAGE).join("go.sum"), module.join("go.sum")).expect("go.sum");
    std::fs::write(module.join("main.go"), main_go).expect("main.go");
}

#[test]
fn a_missing_go_command_is_named_with_a_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        10,
        "  - udf: local\n",
        "  local: { runtime: go, package: ./udfs, function: enrich }\n",
    );
    write_module(
        dir.path(),
        "package main\n\nimport \"github.com/headwater-streaming/headwater/sdk-go/headwater\"\n\n\
func same(n int) (int, error) { return n, nil }\n\n\
func main() { headwater.Main(headwater.Map(\"enrich\", same)) }\n",
    );
    // An empty cache each time: nothing built before may stand in for the build.
    let refused_with = |cmd: &mut Command| -> String {
        let cache = tempfile::tempdir().expect("cache");
        let out = cmd
            .current_dir(dir.path())
            .env("HEADWATER_CACHE", cache.path())
            .args(["validate", "pipeline.yaml"])
            .output()
            .expect("validate");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("udf `local`: the Go worker did not start:"),
            "{stderr}"
        );
        assert!(
            stderr.contains("install Go (1.24 or newer) or set HEADWATER_GO, or build the worker yourself and name it with `binary:`"),
            "{stderr}"
        );
        stderr
    };

    // No `go` on the PATH (and no HEADWATER_GO).
    let empty = tempfile::tempdir().expect("empty PATH");
    let stderr = refused_with(
        super::common::headwater()
            .env_remove("HEADWATER_GO")
            .env("PATH", empty.path()),
    );
    assert!(
        stderr.contains("cannot run `go` to build `package: ./udfs`: No such file or directory"),
        "{stderr}"
    );

    // HEADWATER_GO naming a go that is not there.
    let missing = dir.path().join("no-such-go/bin/go");
    let stderr = refused_with(super::common::headwater().env("HEADWATER_GO", &missing));
    assert!(
        stderr.contains(&format!(
            "cannot run `{}` to build `package: ./udfs`: No such file or directory",
            missing.display()
        )),
        "{stderr}"
    );
}
