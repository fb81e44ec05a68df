"""Run a pipeline on a few records through the real ``headwater`` binary, from your tests.

The harness copies your pipeline into a temporary folder and rewrites it so that it reads
the records you give it and writes everything it produces into that folder:

- every source becomes a ``file`` source reading a JSON-lines file of your records (its
  ``event_time`` settings are kept; a source you give no records reads an empty file);
- every sink becomes a ``file`` sink, so stdout and blackhole sinks are captured too;
- state, the dead-letter queue and checkpoints go into the temporary folder, never next to
  your pipeline;
- each Python UDF's ``path`` is made absolute (the pipeline's folder when absent or
  relative), so your modules import exactly as they do in a normal run.

Python workers run on the interpreter running your tests (``sys.executable``), so the
modules and packages of your virtual environment are available to them.

Example (``pipeline.yaml`` declares ``enrich``, a Python map UDF, in ``my_udfs.py``)::

    from headwater.testing import run_pipeline

    def test_enrich_computes_revenue() -> None:
        result = run_pipeline(
            "pipeline.yaml",
            [{"ts": 1, "price": 2.5, "quantity": 4}, {"ts": 2, "price": 1.0, "quantity": 0}],
        )
        assert [r["revenue"] for r in result.output] == [10.0, 0.0]
        assert result.dead_letters == []

The binary is found through ``binary=``, then ``$HEADWATER_BIN``, then ``headwater`` on
``PATH``, then ``$CARGO_TARGET_DIR/release/headwater``, then
``~/.cache/headwater/target/release/headwater`` (where ``./dev build`` puts it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import yaml

__all__ = [
    "BinaryNotFoundError",
    "PipelineError",
    "Record",
    "RunResult",
    "find_binary",
    "run_pipeline",
]

#: One input record: a JSON object, or a ``str`` written as one raw line (as is), to test
#: how malformed input is dead-lettered.
Record: TypeAlias = "Mapping[str, Any] | str"

PathLike: TypeAlias = "str | os.PathLike[str]"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


class BinaryNotFoundError(FileNotFoundError):
    """The ``headwater`` binary could not be found; the message says where it looked."""


class PipelineError(Exception):
    """``headwater run`` failed (or did not finish in time).

    ``returncode`` is the exit code (``2``: the pipeline is invalid or could not start, e.g.
    a UDF module failed to import; ``1``: the run failed), or ``None`` after a timeout.
    ``stderr`` holds what the host printed, including Python tracebacks of the workers.
    """

    def __init__(
        self,
        message: str,
        *,
        returncode: int | None,
        stderr: str,
        stdout: str = "",
        pipeline_text: str = "",
    ) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout
        #: The rewritten pipeline that was run (error positions in ``stderr`` refer to it).
        self.pipeline_text = pipeline_text


@dataclass(frozen=True)
class RunResult:
    """What a run produced.

    ``outputs`` maps every sink name to the records it received, in the order written.
    ``output`` is the main output: the records of the first sink named in ``output:`` (all
    sinks named there receive the same records), or of the only sink. ``dead_letters`` are
    the DLQ envelopes (``step``, ``error``, ``error_class``, ``detail``, ``raw``, ...).

    With ``parallelism`` above 1 and a ``key_by``, the order of records across keys is not
    defined: sort them in your assertions, or run with ``parallelism=1``.
    """

    outputs: dict[str, list[dict[str, Any]]]
    output: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    stderr: str
    returncode: int
    stdout: str = ""
    #: Per source, how many records it was given.
    inputs: dict[str, int] = field(default_factory=dict)


def find_binary(binary: PathLike | None = None) -> Path:
    """Returns the ``headwater`` binary to run.

    Looks at ``binary``, then ``$HEADWATER_BIN``, then ``headwater`` on ``PATH``, then
    ``$CARGO_TARGET_DIR/release/headwater``, then ``~/.cache/headwater/target/release/headwater``.
    An explicit ``binary`` or ``$HEADWATER_BIN`` that is not an executable file is an error (no
    fallback). Raises :class:`BinaryNotFoundError` naming every place tried.

    >>> find_binary("/no/such/headwater")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    headwater.testing.BinaryNotFoundError: ...
    """
    if binary is not None:
        return _explicit(Path(binary), "binary=")
    from_env = os.environ.get("HEADWATER_BIN")
    if from_env:
        return _explicit(Path(from_env), "$HEADWATER_BIN")
    tried: list[str] = []
    on_path = shutil.which("headwater")
    if on_path:
        return Path(on_path)
    tried.append("`headwater` on PATH")
    candidates: list[Path] = []
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        candidates.append(Path(target) / "release" / "headwater")
    else:
        tried.append("$CARGO_TARGET_DIR/release/headwater ($CARGO_TARGET_DIR is not set)")
    candidates.append(Path.home() / ".cache" / "headwater" / "target" / "release" / "headwater")
    for candidate in candidates:
        if _is_executable(candidate):
            return candidate
        tried.append(str(candidate))
    raise BinaryNotFoundError(
        "cannot find the `headwater` binary; tried: "
        + "; ".join(tried)
        + ". Build it with `./dev build` in a Headwater checkout (it lands in "
        "$CARGO_TARGET_DIR/release/headwater, default ~/.cache/headwater/target/release), "
        "or set HEADWATER_BIN (or pass binary=...) to its path."
    )


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _explicit(path: Path, what: str) -> Path:
    if _is_executable(path):
        return path
    problem = "is not executable" if path.is_file() else "does not exist"
    raise BinaryNotFoundError(
        f"the headwater binary given by {what} ({path}) {problem}; build it with `./dev build` "
        "in a Headwater checkout (it lands in ~/.cache/headwater/target/release/headwater)"
    )


def run_pipeline(
    pipeline: PathLike,
    records: Iterable[Record] | None = None,
    *,
    inputs: Mapping[str, Iterable[Record]] | None = None,
    binary: PathLike | None = None,
    python: PathLike | None = None,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    parallelism: int | None = None,
    workdir: PathLike | None = None,
    check: bool = True,
) -> RunResult:
    """Runs ``pipeline`` (a pipeline YAML file) on ``records`` with the real host binary.

    Args:
        pipeline: path of the pipeline file; relative paths in it keep meaning what they
            mean in a normal run (relative to its folder).
        records: the records for the pipeline's only source. A pipeline with several
            sources needs ``inputs`` instead.
        inputs: records per source name; sources not named read nothing.
        binary: the ``headwater`` binary; see :func:`find_binary` for the default.
        python: interpreter for Python workers; default ``sys.executable``. When given, it
            also replaces the ``python:`` key of every Python UDF; otherwise UDFs with their
            own ``python:`` keep it and the others use this interpreter (via
            ``HEADWATER_PYTHON``, unless ``env`` sets it).
        timeout: seconds before the run is killed (with its workers) and
            :class:`PipelineError` raised.
        env: extra environment variables for the host and its workers (e.g. settings your
            UDFs read), on top of the current environment.
        parallelism: overrides the pipeline's ``parallelism`` (``headwater run -p``).
        workdir: a folder (created if needed) to run in and keep afterwards, to look at the
            rewritten ``pipeline.yaml``, inputs and outputs; default a temporary folder that
            is removed.
        check: raise :class:`PipelineError` when the run fails (default); with ``False``,
            return a result with the exit code and whatever was written.

    Returns:
        a :class:`RunResult` with every sink's records, the dead letters and stderr.

    Raises:
        PipelineError: the run failed (exit code, stderr and the rewritten pipeline attached).
        BinaryNotFoundError: no ``headwater`` binary was found.
        ValueError: ``records``/``inputs`` do not fit the pipeline, or the file is not a
            pipeline the harness can rewrite.

    Example::

        result = run_pipeline("pipeline.yaml", [{"ts": 1, "n": 2}])
        assert result.output == [{"ts": 1, "n": 2, "square": 4}]
    """
    exe = find_binary(binary)
    with contextlib.ExitStack() as cleanup:
        if workdir is None:
            folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="headwater-")))
        else:
            folder = Path(workdir).resolve()
            folder.mkdir(parents=True, exist_ok=True)
        return _run(
            exe, pipeline, records, inputs, python, timeout, env, parallelism, folder, check
        )


def _run(
    exe: Path,
    pipeline: PathLike,
    records: Iterable[Record] | None,
    inputs: Mapping[str, Iterable[Record]] | None,
    python: PathLike | None,
    timeout: float,
    env: Mapping[str, str] | None,
    parallelism: int | None,
    folder: Path,
    check: bool,
) -> RunResult:
    prepared = _prepare(Path(pipeline), folder, records, inputs, python)
    run_env = {**os.environ, **(env or {})}
    if python is not None:
        run_env["HEADWATER_PYTHON"] = os.fspath(python)
    elif not (env and "HEADWATER_PYTHON" in env):
        run_env["HEADWATER_PYTHON"] = sys.executable
    # --fresh: every run of the harness starts from its own input, never from a checkpoint.
    args = [os.fspath(exe), "run", os.fspath(prepared.pipeline_file), "--fresh"]
    if parallelism is not None:
        args += ["-p", str(parallelism)]
    returncode, stdout, stderr = _execute(args, run_env, folder, timeout, prepared.text)
    if returncode != 0 and check:
        hint = {
            2: " (2: the pipeline is invalid or could not start)",
            1: " (1: the run failed)",
        }.get(returncode, f" (killed by signal {-returncode})" if returncode < 0 else "")
        raise PipelineError(
            f"headwater run {pipeline} failed with exit code {returncode}{hint}:\n"
            f"{stderr.rstrip()}\n{_numbered(prepared.text)}",
            returncode=returncode,
            stderr=stderr,
            stdout=stdout,
            pipeline_text=prepared.text,
        )
    outputs = {name: _read_sink(path) for name, path in prepared.sinks.items()}
    output = outputs.get(prepared.main_sink, []) if prepared.main_sink else []
    return RunResult(
        outputs=outputs,
        output=output,
        dead_letters=_read_jsonl(prepared.dlq),
        stderr=stderr,
        returncode=returncode,
        stdout=stdout,
        inputs=prepared.counts,
    )


def _execute(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float, text: str
) -> tuple[int, str, str]:
    """Runs the host in its own process group, so a timeout also ends its Python workers."""
    posix = os.name == "posix"
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=posix,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        try:
            stdout, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a process outside the group holds the pipes
            proc.kill()
            stdout, stderr = "", "(no output: the pipes stayed open after the kill)"
        raise PipelineError(
            f"headwater run {args[2]} did not finish within {timeout}s and was killed; "
            f"stderr so far:\n{stderr.rstrip()}",
            returncode=None,
            stderr=stderr,
            stdout=stdout,
            pipeline_text=text,
        ) from None
    except BaseException:  # KeyboardInterrupt: do not leave the host and workers running
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        if posix:
            _kill_group(proc)  # workers the host left behind, if any
    return proc.returncode, stdout, stderr


def _kill_group(proc: subprocess.Popen[str]) -> None:
    if os.name != "posix":
        proc.kill()
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_sink(path: Path) -> list[dict[str, Any]]:
    """A file sink's committed output: with checkpoints on (the default) the host writes one
    part per checkpoint, ``<stem>-<checkpoint id>.jsonl``; with them off, ``path`` itself."""
    parts = sorted(path.parent.glob(f"{path.stem}-{'[0-9]' * 10}{path.suffix}"))
    if not parts:
        return _read_jsonl(path)
    return [record for part in parts for record in _read_jsonl(part)]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
    return out


def _numbered(text: str) -> str:
    lines = text.splitlines()
    body = "\n".join(f"{i:4} | {line}" for i, line in enumerate(lines, start=1))
    return f"the rewritten pipeline that was run:\n{body}"


# --- the rewrite -----------------------------------------------------------------------------


@dataclass
class _Prepared:
    """The rewritten pipeline and where its inputs and outputs are."""

    pipeline_file: Path
    text: str
    sinks: dict[str, Path]
    main_sink: str | None
    dlq: Path
    state: Path
    inputs: dict[str, Path]
    counts: dict[str, int]


class _Quoted(str):
    """A scalar written in quotes (or a block scalar): dumped in double quotes."""


class _Loader(yaml.BaseLoader):
    """Loads YAML keeping every scalar's text as written, without YAML 1.1 typing (which
    would turn ``2024-01-01T00:00:00Z`` into a datetime or ``on`` into ``True``): the host
    reads scalars as text, so the rewritten file must say exactly what the original said."""

    def construct_scalar(self, node: yaml.ScalarNode) -> Any:
        value = super().construct_scalar(node)
        if node.style is None or node.style == "":
            return None if value == "" else value
        return _Quoted(value)


class _Dumper(yaml.BaseDumper):
    """Dumps what :class:`_Loader` read: plain text plain, quoted text quoted, no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_plain(dumper: yaml.BaseDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data))


def _represent_quoted(dumper: yaml.BaseDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style='"')


def _represent_null(dumper: yaml.BaseDumper, data: None) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", "~")


def _represent_map(dumper: yaml.BaseDumper, data: dict[Any, Any]) -> yaml.MappingNode:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data)


def _represent_list(dumper: yaml.BaseDumper, data: list[Any]) -> yaml.SequenceNode:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data)


_Dumper.add_representer(str, _represent_plain)
_Dumper.add_representer(_Quoted, _represent_quoted)
_Dumper.add_representer(type(None), _represent_null)
_Dumper.add_representer(dict, _represent_map)
_Dumper.add_representer(list, _represent_list)


def _file_name(name: str, index: int, prefix: str) -> str:
    return f"{name}.jsonl" if _SAFE_NAME.match(name) else f"{prefix}{index}.jsonl"


def _write_records(path: Path, records: Iterable[Record], source: str) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            if isinstance(record, str):
                if "\n" in record or "\r" in record:
                    raise ValueError(
                        f"source {source!r}: raw line {count + 1} contains a line break; "
                        "give one line per string"
                    )
                line = record
            elif isinstance(record, Mapping):
                line = json.dumps(dict(record), ensure_ascii=False, allow_nan=False)
            else:
                raise ValueError(
                    f"source {source!r}: record {count + 1} is a {type(record).__name__}; "
                    "give dicts (JSON objects), or strings for raw lines"
                )
            f.write(line + "\n")
            count += 1
    return count


def _prepare(
    pipeline: Path,
    folder: Path,
    records: Iterable[Record] | None,
    inputs: Mapping[str, Iterable[Record]] | None,
    python: PathLike | None,
) -> _Prepared:
    """Writes the rewritten pipeline, its input files and folders into ``folder``."""
    pipeline = pipeline.resolve()
    base = pipeline.parent
    try:
        text = pipeline.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read the pipeline file {pipeline}: {e}") from e
    try:
        spec = yaml.load(text, Loader=_Loader)  # text-only loader: constructs no objects
    except yaml.YAMLError as e:
        raise ValueError(f"{pipeline} is not valid YAML: {e}") from e
    if not isinstance(spec, dict):
        raise ValueError(f"{pipeline} is not a pipeline: expected a mapping at the top level")

    sources = spec.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise ValueError(f"{pipeline}: `sources` must be a mapping of at least one source")
    sinks = spec.get("sinks")
    if not isinstance(sinks, dict) or not sinks:
        raise ValueError(f"{pipeline}: `sinks` must be a mapping of at least one sink")

    if records is not None and inputs is not None:
        raise ValueError("give either `records` (one source) or `inputs` (per source), not both")
    names = [str(n) for n in sources]
    feed: dict[str, Iterable[Record]] = {}
    if records is not None:
        if isinstance(records, (str, bytes, Mapping)):
            raise ValueError("`records` must be a list of records (dicts), not a single one")
        if len(names) != 1:
            raise ValueError(
                f"{pipeline} has {len(names)} sources ({', '.join(names)}); "
                "pass `inputs={source_name: [records...]}` to say which gets what"
            )
        feed[names[0]] = records
    elif inputs is not None:
        unknown = [n for n in inputs if n not in names]
        if unknown:
            raise ValueError(
                f"`inputs` names {', '.join(map(repr, unknown))}, not a source of {pipeline}; "
                f"its sources: {', '.join(names)}"
            )
        feed = dict(inputs)

    (folder / "input").mkdir(parents=True, exist_ok=True)
    (folder / "out").mkdir(parents=True, exist_ok=True)

    new_sources: dict[Any, Any] = {}
    input_files: dict[str, Path] = {}
    counts: dict[str, int] = {}
    for i, (key, source) in enumerate(sources.items()):
        name = str(key)
        path = folder / "input" / _file_name(name, i, "source")
        counts[name] = _write_records(path, feed.get(name, ()), name)
        input_files[name] = path
        rewritten: dict[str, Any] = {"type": "file", "path": _Quoted(str(path))}
        if isinstance(source, dict) and "event_time" in source:
            rewritten["event_time"] = source["event_time"]
        elif isinstance(source, dict) and source.get("type") == "nexmark":
            rewritten["event_time"] = {"field": "date_time"}
        new_sources[key] = rewritten
    spec["sources"] = new_sources

    sink_files: dict[str, Path] = {}
    new_sinks: dict[Any, Any] = {}
    for i, key in enumerate(sinks):
        name = str(key)
        path = folder / "out" / _file_name(name, i, "sink")
        sink_files[name] = path
        new_sinks[key] = {"type": "file", "path": _Quoted(str(path))}
    spec["sinks"] = new_sinks

    state = folder / "state"
    dlq = folder / "dlq.jsonl"
    spec["state"] = {"dir": _Quoted(str(state))}
    spec["dlq"] = {"path": _Quoted(str(dlq))}
    checkpoint = spec.get("checkpoint")
    if isinstance(checkpoint, dict) and "location" in checkpoint:
        checkpoint["location"] = _Quoted(str(folder / "checkpoints"))

    udfs = spec.get("udfs")
    if isinstance(udfs, dict):
        for udf in udfs.values():
            if isinstance(udf, dict) and udf.get("runtime") == "python":
                _rewrite_python_udf(udf, base, python)

    main_sink = _main_sink(spec.get("output"), list(sink_files))
    new_text = f"# Rewritten by headwater.testing from {pipeline}\n" + yaml.dump(
        spec, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000
    )
    pipeline_file = folder / "pipeline.yaml"
    pipeline_file.write_text(new_text, encoding="utf-8")
    return _Prepared(
        pipeline_file=pipeline_file,
        text=new_text,
        sinks=sink_files,
        main_sink=main_sink,
        dlq=dlq,
        state=state,
        inputs=input_files,
        counts=counts,
    )


def _rewrite_python_udf(udf: dict[str, Any], base: Path, python: PathLike | None) -> None:
    path = udf.get("path")
    udf["path"] = _Quoted(str(base / path) if isinstance(path, str) else str(base))
    if python is not None:
        udf["python"] = _Quoted(os.fspath(python))
    else:
        interpreter = udf.get("python")
        # Like the host: a value with a `/` is a path (relative to the pipeline's folder),
        # anything else a command looked up on PATH.
        if isinstance(interpreter, str) and "/" in interpreter:
            udf["python"] = _Quoted(str(base / interpreter))


def _main_sink(output: Any, sinks: Sequence[str]) -> str | None:
    if isinstance(output, str):
        return output
    if isinstance(output, list) and output and isinstance(output[0], str):
        return str(output[0])
    return sinks[0] if len(sinks) == 1 else None
